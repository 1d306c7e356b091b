import json

from django.core.management.base import BaseCommand, CommandError

from apps.instances.management.commands._common import actor, add_actor_arguments
from apps.instances.selectors import instance_diagnostics, instance_get
from cloudmgr.exceptions import ApplicationError


class Command(BaseCommand):
    help = ("Show a running instance's diagnostics (cloud admins): CPU time, disk and network counters and "
            "memory, as JSON.")

    def add_arguments(self, parser):
        parser.add_argument("instance_id")
        add_actor_arguments(parser)

    def handle(self, *args, instance_id, **options):
        user, project = actor(options)
        try:
            instance = instance_get(user=user, project=project, instance_id=instance_id)
            diagnostics = instance_diagnostics(user=user, instance=instance)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(json.dumps(diagnostics, indent=2, sort_keys=True))
