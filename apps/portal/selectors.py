from apps.tenants.models import Project
from apps.tenants.selectors import project_list

SESSION_KEY = "project_id"


def current_project(*, request) -> Project | None:
    """The project the portal acts in: the one chosen in the session, else the user's first."""
    projects = project_list(user=request.user)
    chosen = request.session.get(SESSION_KEY)
    project = projects.filter(pk=chosen).first() if chosen else None
    return project or projects.first()
