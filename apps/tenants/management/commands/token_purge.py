from django.core.management.base import BaseCommand

from apps.tenants import services


class Command(BaseCommand):
    help = "Delete expired API tokens (Keystone's token_flush). Celery beat also runs this hourly."

    def handle(self, *args, **options):
        self.stdout.write(f"{services.tokens_purge()} expired tokens deleted")
