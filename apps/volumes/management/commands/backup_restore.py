from django.core.management.base import BaseCommand, CommandError

from apps.volumes import selectors, services
from apps.volumes.management.commands._common import actor, add_actor_arguments, add_wait_arguments, find, wait
from cloudmgr.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Restore a backup into a new volume (--name) or an existing one (--volume)."

    def add_arguments(self, parser):
        parser.add_argument("backup", help="name or id")
        parser.add_argument("--volume", help="an available volume (name or id) whose data is replaced")
        parser.add_argument("--name", help="the new volume's name")
        add_wait_arguments(parser)
        add_actor_arguments(parser)

    def handle(self, *args, **options):
        user, project = actor(options)
        volumes = selectors.volume_list(user=user, project=project)
        try:
            backup = find(selectors.backup_list(user=user, project=project), options["backup"], "Backup")
            target = find(volumes, options["volume"], "Volume") if options["volume"] else None
            volume = services.backup_restore(backup=backup, user=user, project=project, volume=target,
                                             name=options["name"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        if options["wait"]:
            volume = wait(lambda: volumes.filter(pk=volume.pk).first(), ("restoring-backup",), options)
        self.stdout.write(f"volume {volume.name} {volume.id} {volume.status}")
