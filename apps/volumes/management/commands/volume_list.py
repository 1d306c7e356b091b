from django.core.management.base import BaseCommand

from apps.volumes import selectors
from apps.volumes.management.commands._common import actor, add_actor_arguments


class Command(BaseCommand):
    help = "List the project's volumes (every project's with --all-projects, for admins)."

    def add_arguments(self, parser):
        parser.add_argument("--all-projects", action="store_true")
        add_actor_arguments(parser)

    def handle(self, *args, **options):
        user, project = actor(options)
        for volume in selectors.volume_list(user=user, project=project, all_projects=options["all_projects"]):
            attached = ",".join(f"{a.instance_id}:{a.device}" for a in volume.attachments.all()) or "-"
            self.stdout.write(f"{volume.id} {volume.name or '-'} {volume.size}GiB {volume.status} "
                              f"{volume.volume_type.name} {attached}")
