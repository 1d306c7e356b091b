"""What the instance commands share: finding the acting user and project."""

from django.core.management.base import CommandError

from apps.tenants.models import Project, User
from apps.tenants.selectors import role_on_project


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
