"""Control-plane tasks of the network service (on the control queue): the agents' results."""

from celery import shared_task

from agents.names import CALLBACK_NETWORK_DONE
from apps.networks import services


@shared_task(name=CALLBACK_NETWORK_DONE, ignore_result=True)
def network_task_done(result: dict) -> None:
    services.network_task_done(result=result)
