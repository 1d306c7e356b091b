from django.core.management.base import BaseCommand, CommandError

from apps.volumes import selectors, services
from apps.volumes.management.commands._common import actor, add_actor_arguments, add_wait_arguments, find, wait
from cloudmgr.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Delete a volume (--cascade: with its snapshots; --force: admins, from any status but attached)."

    def add_arguments(self, parser):
        parser.add_argument("volume", help="name or id")
        parser.add_argument("--cascade", action="store_true")
        parser.add_argument("--force", action="store_true")
        add_wait_arguments(parser)
        add_actor_arguments(parser)

    def handle(self, *args, **options):
        user, project = actor(options)
        volumes = selectors.volume_list(user=user, project=project)
        try:
            volume = find(volumes, options["volume"], "Volume")
            services.volume_delete(volume=volume, user=user, cascade=options["cascade"], force=options["force"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        if options["wait"]:
            wait(lambda: volumes.filter(pk=volume.pk).first(), ("deleting",), options)
        self.stdout.write(f"volume {volume.id} deleting")
