"""Who may call what: API-key scopes for apps, project membership for people."""

from __future__ import annotations

from rest_framework.permissions import BasePermission

from .auth import key_context


class HasIngestScope(BasePermission):
    message = "This endpoint takes a project API key with the 'ingest' scope."

    def has_permission(self, request, view) -> bool:
        context = key_context(request)
        return context is not None and context.has_scope("ingest")


class ReadsProjectData(BasePermission):
    """A key with the 'data' scope, or a logged-in person (limited to their projects)."""

    message = "Reading this takes a project API key with the 'data' scope, or a project member."

    def has_permission(self, request, view) -> bool:
        context = key_context(request)
        if context is not None:
            return context.has_scope("data")
        return bool(request.user and request.user.is_authenticated)


class AnyProjectCaller(BasePermission):
    """Any project API key, or a logged-in person."""

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated)
