from celery import shared_task

from agents.names import CALLBACK_DESTROY_DONE, CALLBACK_OPERATION_DONE, CALLBACK_SPAWN_DONE
from apps.instances import services


@shared_task(name=CALLBACK_SPAWN_DONE, ignore_result=True)
def spawn_done(result: dict) -> None:
    services.instance_spawn_done(result=result)


@shared_task(name=CALLBACK_DESTROY_DONE, ignore_result=True)
def destroy_done(result: dict) -> None:
    services.instance_destroy_done(result=result)


@shared_task(name=CALLBACK_OPERATION_DONE, ignore_result=True)
def operation_done(result: dict) -> None:
    services.instance_operation_done(result=result)


@shared_task(name="apps.instances.tasks.instances_reconcile", ignore_result=True)
def instances_reconcile() -> None:
    services.instances_reconcile()
