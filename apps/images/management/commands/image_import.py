from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from apps.images.models import DiskFormat, Visibility
from apps.images.services import image_import_file
from apps.tenants.models import Project
from cloudmgr.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Import a disk image file into the image service."

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--name", required=True)
        parser.add_argument("--disk-format", required=True, choices=DiskFormat.values)
        parser.add_argument("--project", default="admin", help="owner project (default: admin)")
        parser.add_argument("--public", action="store_true")

    def handle(self, *args, file, name, disk_format, project, public, **options):
        owner = Project.objects.filter(name=project).first()
        if owner is None:
            raise CommandError(f"Project {project} does not exist.")
        visibility = Visibility.PUBLIC if public else Visibility.PRIVATE
        try:
            image = image_import_file(
                project=owner, path=file, name=name, disk_format=disk_format, visibility=visibility
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"image {image.name} {image.id} {image.status} {image.size} bytes")
