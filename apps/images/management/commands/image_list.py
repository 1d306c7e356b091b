from django.core.management.base import BaseCommand

from apps.images.models import Image, ImageStatus


class Command(BaseCommand):
    help = "List the images of the image service (all projects)."

    def handle(self, *args, **options):
        row = "{:<36}  {:<20} {:<11} {:<6} {:<9} {:<12} {:>12}"
        self.stdout.write(row.format("ID", "NAME", "STATUS", "FORMAT", "VISIBLE", "PROJECT", "SIZE"))
        images = Image.objects.exclude(status=ImageStatus.DELETED).select_related("project")
        for image in images:
            self.stdout.write(
                row.format(str(image.id), image.name, image.status, image.disk_format, image.visibility,
                           image.project.name, image.size if image.size is not None else "")
            )
