import logging
import time

from celery import shared_task

from agents.names import CALLBACK_DESTROY_DONE, CALLBACK_OPERATION_DONE, CALLBACK_SPAWN_DONE
from apps.instances import services

logger = logging.getLogger(__name__)


@shared_task(name=CALLBACK_SPAWN_DONE, ignore_result=True)
def spawn_done(result: dict) -> None:
    started = time.time()
    services.instance_spawn_done(result=result)
    _log_spawn_timings(result, started, time.time())


def _log_spawn_timings(result: dict, started: float, finished: float) -> None:
    """One line per spawn with where its time went (bench/boot.py reads it): when the agent
    began and finished, its stages, and when this callback began and finished (epoch seconds)."""
    timings = result.get("timings")
    if not isinstance(timings, dict):
        return
    stages = "".join(f" {name}={float(seconds):.3f}" for name, seconds in (timings.get("stages") or {}).items())
    logger.info(
        "spawn timings instance=%s ok=%s agent_received=%.3f agent_finished=%.3f callback_started=%.3f "
        "callback_finished=%.3f%s",
        result.get("instance_id"), bool(result.get("ok")), timings.get("received_at", 0.0),
        timings.get("finished_at", 0.0), started, finished, stages,
    )


@shared_task(name=CALLBACK_DESTROY_DONE, ignore_result=True)
def destroy_done(result: dict) -> None:
    services.instance_destroy_done(result=result)


@shared_task(name=CALLBACK_OPERATION_DONE, ignore_result=True)
def operation_done(result: dict) -> None:
    services.instance_operation_done(result=result)


@shared_task(name="apps.instances.tasks.instances_reconcile", ignore_result=True)
def instances_reconcile() -> None:
    services.instances_reconcile()
