from django.core.management.base import BaseCommand, CommandError

from apps.volumes import selectors, services
from apps.volumes.management.commands._common import actor, add_actor_arguments, add_wait_arguments, find, wait
from cloudmgr.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Grow a volume (also an attached one: its guest sees the new size)."

    def add_arguments(self, parser):
        parser.add_argument("volume", help="name or id")
        parser.add_argument("size", type=int, help="the new size in GiB")
        add_wait_arguments(parser)
        add_actor_arguments(parser)

    def handle(self, *args, **options):
        user, project = actor(options)
        volumes = selectors.volume_list(user=user, project=project)
        try:
            volume = find(volumes, options["volume"], "Volume")
            services.volume_extend(volume=volume, user=user, new_size=options["size"], in_use=True)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        if options["wait"]:
            volume = wait(lambda: volumes.filter(pk=volume.pk).first(), ("extending",), options)
        self.stdout.write(f"volume {volume.id} {volume.size} GiB {volume.status}")
