import time

from django.core.management.base import BaseCommand, CommandError

from apps.images.selectors import image_get
from apps.instances import services
from apps.instances.management.commands._common import actor, add_actor_arguments
from apps.instances.selectors import flavor_get, instance_get
from apps.instances.states import VmState, api_status
from cloudmgr.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Create (boot) an instance."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--flavor", required=True, help="flavor name or id")
        parser.add_argument("--image", required=True, help="image name or id")
        parser.add_argument("--description", help="a description of up to 255 characters")
        parser.add_argument("--config-drive", action="store_true",
                            help="give the guest a config drive even where its network serves metadata")
        parser.add_argument("--wait", action="store_true", help="wait until the instance is ACTIVE or ERROR")
        parser.add_argument("--timeout", type=int, default=300, help="seconds to --wait (default 300)")
        add_actor_arguments(parser)

    def handle(self, *args, **options):
        user, project = actor(options)
        try:
            instance = services.instance_create(
                user=user,
                project=project,
                name=options["name"],
                flavor=flavor_get(user=user, name_or_id=options["flavor"]),
                image=image_get(user=user, project=project, name_or_id=options["image"]),
                config_drive=options["config_drive"],
                description=options["description"],
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"instance {instance.name} {instance.id} {api_status(instance.vm_state)}")
        if not options["wait"]:
            return
        deadline = time.monotonic() + options["timeout"]
        while instance.vm_state == VmState.BUILDING and time.monotonic() < deadline:
            time.sleep(0.5)
            instance = instance_get(user=user, project=project, instance_id=str(instance.id))
        status = api_status(instance.vm_state)
        self.stdout.write(f"instance {instance.name} {instance.id} {status}")
        if instance.vm_state != VmState.ACTIVE:
            fault = instance.faults.first()
            raise CommandError(f"instance is {status}" + (f": {fault.message}" if fault else ""))
