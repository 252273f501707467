"""Shared plumbing of the management commands: service errors become CommandError."""

from __future__ import annotations

from django.core.management.base import CommandError

from feedback.errors import ServiceError
from feedback.models import Project


def project_or_fail(slug: str) -> Project:
    project = Project.objects.filter(slug=slug).first()
    if project is None:
        raise CommandError(f"No project {slug!r}. Create it with: manage.py create_project {slug}")
    return project


def command_error(exc: ServiceError) -> CommandError:
    return CommandError("; ".join(f"{e.field or 'input'}: {e.detail}" for e in exc.errors))
