from django.core.management.base import BaseCommand, CommandError

from apps.tenants import services
from cloudmgr.exceptions import ApplicationError


class Command(BaseCommand):
    help = (
        "Create a user. Without --password a strong random one is made and printed once "
        "(it is stored only as a hash). Give the user a role with role_grant."
    )

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--password", help="the password (checked against the password rules)")
        parser.add_argument("--email", default="")

    def handle(self, *args, name, password, email, **options):
        generated = password is None
        if generated:
            password = services.generate_password()
        try:
            user = services.user_create(username=name, password=password, email=email)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"user {user.username} {user.pk.hex} created")
        if generated:
            self.stdout.write(self.style.SUCCESS(f"Password of {user.username}: {password}"))
            self.stdout.write("This password is shown once and stored nowhere in clear text.")
