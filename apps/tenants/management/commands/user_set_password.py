import getpass

from django.core.management.base import BaseCommand, CommandError

from apps.tenants import selectors, services
from cloudmgr.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Set a user's password (asked twice, without echo, unless --password is given). Ends their API tokens."

    def add_arguments(self, parser):
        parser.add_argument("name", help="user name or id")
        parser.add_argument("--password", help="the new password (visible in the process list; prefer the prompt)")

    def handle(self, *args, name, password, **options):
        try:
            user = selectors.user_by_name_or_id(name_or_id=name)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        if password is None:
            password = getpass.getpass(f"New password for {user.username}: ")
            if getpass.getpass("Again: ") != password:
                raise CommandError("The passwords do not match; nothing changed.")
        try:
            services.user_set_password(user=user, password=password)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"password of {user.username} changed")
