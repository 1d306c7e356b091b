"""Host-side agents: run by Celery workers on every host. Nothing here imports Django or apps."""

# Reported in every heartbeat (HostReport.agent_version); bump when agent behaviour changes.
AGENT_VERSION = "0.1.0"
