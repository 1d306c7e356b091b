from celery import shared_task

from agents.names import TASK_HOST_HEARTBEAT
from agents.specs import HostReport
from apps.hosts import services


@shared_task(name=TASK_HOST_HEARTBEAT, ignore_result=True)
def host_heartbeat(report: dict) -> None:
    services.host_heartbeat(report=HostReport.from_dict(report))


@shared_task(name="apps.hosts.tasks.hosts_mark_down", ignore_result=True)
def hosts_mark_down() -> None:
    services.hosts_mark_down()
