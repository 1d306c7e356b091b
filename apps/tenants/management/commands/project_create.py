from django.core.management.base import BaseCommand, CommandError

from apps.tenants import services
from apps.tenants.models import Project
from cloudmgr.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Create a project (with the default quotas). Idempotent: an existing project is left as it is."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--description", default="")

    def handle(self, *args, name, description, **options):
        existing = Project.objects.filter(name=name).first()
        if existing is not None:
            self.stdout.write(f"project {existing.name} {existing.id.hex} exists already")
            return
        try:
            project = services.project_create(name=name, description=description)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"project {project.name} {project.id.hex} created")
