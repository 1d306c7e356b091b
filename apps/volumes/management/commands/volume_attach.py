from django.core.management.base import BaseCommand, CommandError

from apps.instances.selectors import instance_list
from apps.volumes import selectors, services
from apps.volumes.management.commands._common import actor, add_actor_arguments, add_wait_arguments, find, wait
from cloudmgr.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Attach a volume to an instance (hot-plugged, virtio)."

    def add_arguments(self, parser):
        parser.add_argument("volume", help="name or id")
        parser.add_argument("instance", help="name or id")
        add_wait_arguments(parser)
        add_actor_arguments(parser)

    def handle(self, *args, **options):
        user, project = actor(options)
        volumes = selectors.volume_list(user=user, project=project)
        try:
            volume = find(volumes, options["volume"], "Volume")
            instance = find(instance_list(user=user, project=project), options["instance"], "Instance")
            attachment = services.volume_attach(volume=volume, instance=instance, user=user)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        if options["wait"]:
            volume = wait(lambda: volumes.filter(pk=volume.pk).first(), ("attaching",), options)
        self.stdout.write(f"volume {volume.id} on {instance.name} as {attachment.device} {volume.status}")
