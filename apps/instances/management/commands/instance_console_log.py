from django.core.management.base import BaseCommand, CommandError

from apps.instances.management.commands._common import actor, add_actor_arguments
from apps.instances.selectors import instance_console_log, instance_get
from cloudmgr.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Show an instance's serial console log."

    def add_arguments(self, parser):
        parser.add_argument("instance_id")
        parser.add_argument("--lines", type=int, default=None, help="only the last N lines")
        add_actor_arguments(parser)

    def handle(self, *args, instance_id, lines, **options):
        user, project = actor(options)
        try:
            instance = instance_get(user=user, project=project, instance_id=instance_id)
            self.stdout.write(instance_console_log(instance=instance, length=lines), ending="")
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
