"""Control-plane tasks of the block storage domain: the agents' results come back here."""

from celery import shared_task

from agents.names import CALLBACK_VOLUME_DONE
from apps.volumes import services


@shared_task(name=CALLBACK_VOLUME_DONE, ignore_result=True)
def volume_task_done(result: dict) -> None:
    """Every volume task's result (storage and compute hosts): ``services.volume_task_done``."""
    services.volume_task_done(result=result)
