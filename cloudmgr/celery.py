"""The control plane's Celery app: result callbacks and periodic reconcilers on the `control` queue."""

import os

from celery import Celery


os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cloudmgr.settings")

app = Celery("cloudmgr")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
