from django.core.management.base import BaseCommand, CommandError

from apps.volumes import selectors, services
from apps.volumes.management.commands._common import actor, add_actor_arguments, add_wait_arguments, find, wait
from cloudmgr.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Back up a volume into the backup store (--incremental; --force: also while attached)."

    def add_arguments(self, parser):
        parser.add_argument("volume", help="name or id")
        parser.add_argument("--name", default="")
        parser.add_argument("--incremental", action="store_true")
        parser.add_argument("--force", action="store_true")
        add_wait_arguments(parser)
        add_actor_arguments(parser)

    def handle(self, *args, **options):
        user, project = actor(options)
        try:
            volume = find(selectors.volume_list(user=user, project=project), options["volume"], "Volume")
            backup = services.backup_create(volume=volume, user=user, name=options["name"],
                                            incremental=options["incremental"], force=options["force"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        if options["wait"]:
            backup = wait(lambda: selectors.backup_list(user=user, project=project).filter(pk=backup.pk).first(),
                          ("creating",), options)
        self.stdout.write(f"backup {backup.name} {backup.id} {backup.status}")
