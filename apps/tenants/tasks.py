from celery import shared_task

from apps.tenants import services


@shared_task(name="apps.tenants.tasks.tokens_purge", ignore_result=True)
def tokens_purge() -> None:
    """Delete expired tokens (Keystone's token_flush), run hourly by beat."""
    services.tokens_purge()
