from django.core.management.base import BaseCommand, CommandError

from apps.instances import services
from apps.instances.management.commands._common import actor, add_actor_arguments
from apps.instances.selectors import instance_get
from cloudmgr.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Delete an instance (from any state): its domain and disk are destroyed on its host."

    def add_arguments(self, parser):
        parser.add_argument("instance_id")
        add_actor_arguments(parser)

    def handle(self, *args, instance_id, **options):
        user, project = actor(options)
        try:
            instance = instance_get(user=user, project=project, instance_id=instance_id)
            services.instance_delete(instance=instance, user=user)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"instance {instance.id} is being deleted")
