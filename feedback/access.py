"""Who may see and change what in the admin: the one access model of both apps.

Everything is decided by the person's **role in the row's project** (``Membership``), never by
a global flag alone. A superuser sees and may do everything. For anyone else, a row of project
P is visible, or an action on it allowed, only when their role in P is one of the roles that
action needs. Two ways of naming those roles, one rule:

- **Intake models** (projects, members, taxonomy, keys, predictions, feedback: the models the
  role groups carry Django permissions for). The roles are those whose
  ``feedback.services.projects.ROLE_PERMISSIONS`` include the permission Django asks for
  (``roles_granting("feedback.change_apikey")``). The role groups give the global permission;
  ``ProjectScopedMixin`` narrows it to the projects where the role carries it. Without that a
  project admin of B who is only a reviewer in A could mint keys in A with B's permissions.
- **Data models** (gold sets, exports, audits: labeling's, which the role groups carry no
  permission for). The roles are named by the labeling side itself
  (``labeling.selectors.READ_ROLES``: data scientists and project admins), and
  ``has_project_role`` / ``project_ids_for`` answer with them directly. Reviewers never see
  that such rows exist.

The admin asks the same question many times per page (the sidebar lists every model), so
``project_ids_for`` computes each answer once per request.

``labeling`` imports this module; ``feedback`` never imports ``labeling``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.auth import get_permission_codename
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest

from .models import Project
from .selectors import projects_for_user
from .services.projects import ROLE_PERMISSIONS

CACHE_ATTRIBUTE = "_redress_project_ids"


def roles_granting(perm: str) -> list[str]:
    """The roles whose group carries ``perm`` ("app.codename")."""
    return [role for role, perms in ROLE_PERMISSIONS.items() if perm in perms]


def permission_name(opts: Any, action: str) -> str:
    """The permission "app.action_model" of a model's ``_meta`` for an action."""
    return f"{opts.app_label}.{get_permission_codename(action, opts)}"


def projects_where(request: HttpRequest, perm: str | None = None) -> QuerySet[Project]:
    """Projects the person may see (``perm`` None) or may use ``perm`` ("app.codename") in,
    as a queryset (a subquery in the caller's query)."""
    if perm is None:
        return projects_for_user(user=request.user)
    return projects_for_user(user=request.user, roles=roles_granting(perm))


def project_ids_for(request: HttpRequest, roles: Iterable[str] | None = None) -> set[int] | None:
    """Ids of the projects where the person holds one of ``roles`` (any role when None);
    None means every project (a superuser). Computed once per request and role set."""
    if request.user.is_superuser:
        return None
    key = None if roles is None else tuple(sorted(roles))
    cache: dict = request.__dict__.setdefault(CACHE_ATTRIBUTE, {})
    if key not in cache:
        projects = projects_for_user(user=request.user, roles=None if key is None else list(key))
        cache[key] = set(projects.values_list("pk", flat=True))
    return cache[key]


def has_project_role(
    request: HttpRequest, roles: Iterable[str], project_id: int | None = None
) -> bool:
    """Active staff holding one of ``roles`` in ``project_id`` (in some project when None)."""
    if not (request.user.is_active and request.user.is_staff):
        return False
    allowed = project_ids_for(request, roles)
    if allowed is None:
        return True
    return project_id in allowed if project_id is not None else bool(allowed)


class ProjectScopedMixin:
    """Limits a ModelAdmin of an intake-style model to the person's projects, and each write
    to the projects where their role carries that write's permission (module docstring).

    ``project_lookup`` is the model's path to its project ("pk" for Project itself).
    """

    project_lookup: str = "project"
    opts: Any  # provided by the ModelAdmin this is mixed into

    def project_id_of(self, obj: models.Model) -> int:
        return obj.pk if self.project_lookup == "pk" else getattr(obj, f"{self.project_lookup}_id")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        return queryset.filter(**{f"{self.project_lookup}__in": projects_where(request)})

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.related_model is Project:
            # New objects may go only where the person may add them.
            kwargs["queryset"] = projects_where(request, permission_name(self.opts, "add"))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def allowed_in_project_of(self, request: HttpRequest, action: str, obj: Any) -> bool:
        if obj is None or request.user.is_superuser:
            return True
        perm = permission_name(self.opts, action)
        return projects_where(request, perm).filter(pk=self.project_id_of(obj)).exists()

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_change_permission(request, obj) and self.allowed_in_project_of(
            request, "change", obj
        )

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_delete_permission(request, obj) and self.allowed_in_project_of(
            request, "delete", obj
        )


class ProjectInlineMixin:
    """For inlines on the project page, where ``obj`` is the project: writes need the
    permission in that project (the page itself already shows only the person's projects)."""

    opts: Any  # provided by the InlineModelAdmin this is mixed into

    def _allowed(self, request: HttpRequest, action: str, obj: Project | None) -> bool:
        if obj is None or request.user.is_superuser:
            return True
        perm = permission_name(self.opts, action)
        return projects_where(request, perm).filter(pk=obj.pk).exists()

    def has_add_permission(self, request: HttpRequest, obj: Project | None = None) -> bool:
        return super().has_add_permission(request, obj) and self._allowed(request, "add", obj)

    def has_change_permission(self, request: HttpRequest, obj: Project | None = None) -> bool:
        return super().has_change_permission(request, obj) and self._allowed(request, "change", obj)

    def has_delete_permission(self, request: HttpRequest, obj: Project | None = None) -> bool:
        return super().has_delete_permission(request, obj) and self._allowed(request, "delete", obj)
