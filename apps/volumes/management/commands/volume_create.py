from django.core.management.base import BaseCommand, CommandError

from apps.images.selectors import image_get
from apps.volumes import selectors, services
from apps.volumes.management.commands._common import actor, add_actor_arguments, add_wait_arguments, find, wait
from cloudmgr.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Create a volume: empty (--size), or from --image or --snapshot."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--size", type=int, help="GiB (from an image or a snapshot: at least its size)")
        parser.add_argument("--image", help="image name or id")
        parser.add_argument("--snapshot", help="snapshot name or id")
        parser.add_argument("--type", help="volume type name or id (default: the default type)")
        add_wait_arguments(parser)
        add_actor_arguments(parser)

    def handle(self, *args, **options):
        user, project = actor(options)
        try:
            image = image_get(user=user, project=project, name_or_id=options["image"]) if options["image"] else None
            snapshot = (find(selectors.snapshot_list(user=user, project=project), options["snapshot"], "Snapshot")
                        if options["snapshot"] else None)
            vtype = (selectors.volume_type_get(user=user, project=project, name_or_id=options["type"])
                     if options["type"] else None)
            if options["size"] is None and image is None and snapshot is None:
                raise CommandError("An empty volume needs --size.")
            volume = services.volume_create(user=user, project=project, name=options["name"], size=options["size"],
                                            image=image, snapshot=snapshot, volume_type=vtype)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        if options["wait"]:
            volume = wait(lambda: selectors.volume_list(user=user, project=project).filter(pk=volume.pk).first(),
                          ("creating",), options)
        self.stdout.write(f"volume {volume.name} {volume.id} {volume.size} GiB {volume.status}")
