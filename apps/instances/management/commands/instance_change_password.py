import getpass
import sys

from django.core.management.base import BaseCommand, CommandError

from apps.instances import services
from apps.instances.management.commands._common import actor, add_actor_arguments
from apps.instances.selectors import instance_get
from cloudmgr.exceptions import ApplicationError


class Command(BaseCommand):
    help = ("Set the password of an instance's admin user through its QEMU guest agent (the image needs "
            "hw_qemu_guest_agent=yes). The password is read from standard input, or asked for on a terminal, "
            "never from the command line (which other users of the host can read).")

    def add_arguments(self, parser):
        parser.add_argument("instance_id")
        add_actor_arguments(parser)

    def handle(self, *args, instance_id, **options):
        user, project = actor(options)
        password = getpass.getpass("New password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise CommandError("No password given.")
        try:
            instance = instance_get(user=user, project=project, instance_id=instance_id)
            services.instance_change_password(instance=instance, user=user, password=password)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"instance {instance.name} {instance.id}: password set")
