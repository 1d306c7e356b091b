from django.core.management.base import BaseCommand

from apps.instances.management.commands._common import actor, add_actor_arguments
from apps.instances.selectors import instance_list
from apps.instances.states import api_status


class Command(BaseCommand):
    help = "List the instances of a project."

    def add_arguments(self, parser):
        add_actor_arguments(parser)

    def handle(self, *args, **options):
        user, project = actor(options)
        row = "{:<36}  {:<24} {:<8} {:<10} {:<10} {}"
        self.stdout.write(row.format("ID", "NAME", "STATUS", "TASK", "FLAVOR", "HOST"))
        for instance in instance_list(user=user, project=project):
            self.stdout.write(
                row.format(
                    str(instance.id),
                    instance.name,
                    api_status(instance.vm_state, instance.task_state),
                    instance.task_state or "-",
                    instance.flavor.name,
                    instance.host.hostname if instance.host else "-",
                )
            )
