"""The control plane's Celery app: result callbacks and periodic reconcilers on the `control` queue."""

import os

from celery import Celery

from agents.names import CONTROL_QUEUE

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cloudmgr.settings")

app = Celery("cloudmgr")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_default_queue = CONTROL_QUEUE
app.autodiscover_tasks()
