from django.core.management.base import BaseCommand, CommandError

from apps.tenants import selectors, services
from cloudmgr.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Give a user a role (admin, member, reader, or a custom one) on a project. Idempotent."

    def add_arguments(self, parser):
        parser.add_argument("role")
        parser.add_argument("--user", required=True, help="user name or id")
        parser.add_argument("--project", required=True, help="project name or id")

    def handle(self, *args, role, user, project, **options):
        try:
            target = selectors.user_by_name_or_id(name_or_id=user)
            place = selectors.project_by_name_or_id(name_or_id=project)
            services.role_grant(user=target, project=place, role=role)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"user {target.username} has role {role} on project {place.name}")
