"""What the commands of every app share: finding the acting user and project, and an object by
name or id among those the actor sees."""

from django.core.management.base import CommandError

from apps.tenants.models import Project, User
from apps.tenants.selectors import role_on_project
from cloudmgr.models import first_by_name_or_id


def find(queryset, name_or_id: str, what: str):
    found = first_by_name_or_id(queryset, name_or_id)
    if found is None:
        raise CommandError(f"{what} {name_or_id} could not be found.")
    return found


def add_actor_arguments(parser) -> None:
    parser.add_argument("--user", default="admin", help="acting user (default: admin)")
    parser.add_argument("--project", default="admin", help="project to act in (default: admin)")


def actor(options) -> tuple[User, Project]:
    user = User.objects.filter(username=options["user"], is_active=True).first()
    if user is None:
        raise CommandError(f"User {options['user']} does not exist.")
    project = Project.objects.filter(name=options["project"]).first()
    if project is None:
        raise CommandError(f"Project {options['project']} does not exist.")
    if role_on_project(user=user, project=project) is None:
        raise CommandError(f"User {user.username} has no role on project {project.name}.")
    return user, project


def action_command(service_name: str, help_text: str, *, option: str | None = None):
    """A command that runs one lifecycle service on an instance: ``<command> ID [--wait]``.

    ``option`` adds what the action needs: ``hard`` (``--hard``), ``flavor`` (a FLAVOR argument),
    ``image`` (``--image``, rebuild; default: the instance's image), ``state`` (``--state``),
    ``snapshot`` (``--name`` of the new image) or ``backup`` (``--name``, ``--type``, ``--rotation``).
    """
    import time

    from django.core.management.base import BaseCommand

    from apps.instances import services
    from apps.instances.states import api_status
    from cloudmgr.exceptions import ApplicationError

    class Command(BaseCommand):
        help = help_text

        def add_arguments(self, parser):
            parser.add_argument("instance_id")
            if option == "flavor":
                parser.add_argument("flavor", help="the new flavor's name or id")
            if option == "hard":
                parser.add_argument("--hard", action="store_true", help="reset instead of a clean ACPI reboot")
            if option == "image":
                parser.add_argument("--image", help="image name or id (default: the instance's image)")
            if option == "state":
                parser.add_argument("--state", required=True, choices=[str(s) for s in services.RESET_STATES],
                                    help="the new vm_state")
            if option in ("snapshot", "backup"):
                parser.add_argument("--name", required=True, help="the new image's name")
            if option == "backup":
                parser.add_argument("--type", dest="backup_type", required=True,
                                    help='the backup type, e.g. "daily": rotation counts the backups of one type')
                parser.add_argument("--rotation", type=int, required=True,
                                    help="how many backups of this type to keep (the oldest beyond go)")
            parser.add_argument("--wait", action="store_true", help="wait until the action is done")
            parser.add_argument("--timeout", type=int, default=300, help="seconds to --wait (default 300)")
            add_actor_arguments(parser)

        def handle(self, *args, instance_id, **options):
            from apps.images.selectors import image_get
            from apps.instances.selectors import flavor_get, instance_get

            user, project = actor(options)
            service = getattr(services, service_name)
            try:
                instance = instance_get(user=user, project=project, instance_id=instance_id)
                kwargs = {}
                if option in ("hard", "state"):
                    kwargs[option] = options[option]
                if option in ("snapshot", "backup"):
                    kwargs["name"] = options["name"]
                if option == "backup":
                    kwargs.update(backup_type=options["backup_type"], rotation=options["rotation"])
                if option == "flavor":
                    kwargs["flavor"] = flavor_get(user=user, name_or_id=options["flavor"])
                if option == "image":
                    kwargs["image"] = (image_get(user=user, project=project, name_or_id=options["image"])
                                       if options["image"] else instance.image)
                    if kwargs["image"] is None:
                        raise CommandError("The instance's image is gone: name one with --image.")
                made = service(instance=instance, user=user, **kwargs)
            except ApplicationError as exc:
                raise CommandError(exc.message) from exc
            if options["wait"]:
                deadline = time.monotonic() + options["timeout"]
                instance = instance_get(user=user, project=project, instance_id=str(instance.id))
                while instance.task_state and time.monotonic() < deadline:
                    time.sleep(0.5)
                    instance = instance_get(user=user, project=project, instance_id=str(instance.id))
                if instance.task_state:
                    raise CommandError(f"timed out: instance is still {instance.task_state}")
            else:
                instance = instance_get(user=user, project=project, instance_id=str(instance.id))
            status = api_status(instance.vm_state, instance.task_state)
            self.stdout.write(f"instance {instance.name} {instance.id} {status}")
            if option in ("snapshot", "backup"):
                self.stdout.write(f"image {made.name} {made.id}")

    return Command
