"""How the control plane talks to agents: tasks sent by name to a host's queue.

`agent_cast` fires a task whose result goes to a callback on the control queue; `agent_call`
waits for a small answer (console log). With CLOUDMGR_AGENTS_IN_PROCESS both run the agents' task
functions right here: the fast unit tests use that with the fake driver.
"""

import logging
import threading
from typing import Any

from celery import signature
from celery.exceptions import TimeoutError as CeleryTimeoutError
from django.conf import settings

from cloudmgr.celery import app as control_app
from cloudmgr.exceptions import ServiceUnavailable

logger = logging.getLogger(__name__)


def _run_agent_task(task: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    import agents.network.tasks  # noqa: F401 - registers the network agent's tasks
    import agents.storage.tasks  # noqa: F401 - registers the storage agent's tasks
    import agents.tasks  # registers the agents' tasks on their app

    return agents.tasks.app.tasks[task].apply(args=args, kwargs=kwargs).get()


_registry_lock = threading.Lock()


def _run_control_task(task: str, args: list[Any]) -> None:
    with _registry_lock:  # task discovery is lazy and not thread-safe
        if task not in control_app.tasks:  # importing runs Django's model checks: only when needed
            control_app.loader.import_default_modules()
        control_task = control_app.tasks[task]
    control_task.apply(args=args).get()


def agent_cast(*, queue: str, task: str, payload: dict[str, Any], callback: str | None = None) -> None:
    if settings.CLOUDMGR_AGENTS_IN_PROCESS:
        result = _run_agent_task(task, [payload], {})
        if callback:
            _run_control_task(callback, [result])
        return
    link = signature(callback, queue=settings.CLOUDMGR_CONTROL_QUEUE, app=control_app) if callback else None
    # The answer comes through the callback: with the Redis result backend, a task sent without
    # ignore_result subscribes this process to its result channel for good (no result ever comes).
    control_app.send_task(task, args=[payload], queue=queue, link=link, ignore_result=True)
    logger.debug("sent %s to %s", task, queue)


def agent_call(*, queue: str, task: str, payload: dict[str, Any], **kwargs: Any) -> Any:
    if settings.CLOUDMGR_AGENTS_IN_PROCESS:
        return _run_agent_task(task, [payload], kwargs)
    timeout = settings.CLOUDMGR_AGENT_CALL_TIMEOUT
    # Expire the message with the wait, so a host that is down does not run it hours later.
    result = control_app.send_task(task, args=[payload], kwargs=kwargs, queue=queue, expires=timeout)
    try:
        # Also from a control-plane task (a volume's result goes on to export it for a server):
        # the answer comes from an agent's worker, never from this one, so waiting cannot deadlock.
        return result.get(timeout=timeout, disable_sync_subtasks=False)
    except CeleryTimeoutError as exc:
        raise ServiceUnavailable(f"The host did not answer within {timeout} s.") from exc
    finally:
        result.forget()
