"""Who may see the data side of the admin: gold sets, exports and audits belong to the data
scientists and admins of a project (``READ_ROLES``), decided by project role as the API does.

The admin asks for module, view and add permissions many times per page (the sidebar lists
every model), so the answer is computed once per request.
"""

from __future__ import annotations

from django.http import HttpRequest

from feedback.selectors import projects_for_user

from ..selectors import READ_ROLES


def data_project_ids(request: HttpRequest) -> set[int] | None:
    """Projects whose gold sets, exports and audits the person may read (None: every project,
    for a superuser)."""
    if request.user.is_superuser:
        return None
    cached = getattr(request, "_redress_data_project_ids", None)
    if cached is None:
        projects = projects_for_user(user=request.user, roles=READ_ROLES)
        cached = set(projects.values_list("pk", flat=True))
        request._redress_data_project_ids = cached  # type: ignore[attr-defined]
    return cached


def reads_project_data(request: HttpRequest, project_id: int | None = None) -> bool:
    """Staff with a data role in some project (or in ``project_id`` when given)."""
    if not (request.user.is_active and request.user.is_staff):
        return False
    allowed = data_project_ids(request)
    if allowed is None:
        return True
    return project_id in allowed if project_id is not None else bool(allowed)
