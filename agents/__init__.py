"""Host-side agents: run by Celery workers on every host. Nothing here imports Django or apps."""
