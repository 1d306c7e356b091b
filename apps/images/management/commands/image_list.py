from django.core.management.base import BaseCommand

from apps.images.models import Image, ImageStatus


class Command(BaseCommand):
    help = "List the images of the image service."

    def handle(self, *args, **options):
        row = "{:<36}  {:<20} {:<8} {:<6} {:<9} {:>12}"
        self.stdout.write(row.format("ID", "NAME", "STATUS", "FORMAT", "VISIBLE", "SIZE"))
        for image in Image.objects.exclude(status=ImageStatus.DELETED):
            self.stdout.write(
                row.format(str(image.id), image.name, image.status, image.disk_format, image.visibility, image.size or "")
            )
