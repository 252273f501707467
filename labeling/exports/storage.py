"""Where a finished export file goes: Django's default storage, under a name that says the
project, the export and the start of its checksum."""

from __future__ import annotations

from django.core.files import File
from django.core.files.storage import default_storage

from ..models import Export


class _TempFile(File):
    """A finished temporary file: FileSystemStorage moves it instead of copying."""

    def temporary_file_path(self) -> str:
        return self.name


def export_file_store(*, export: Export, path: str, checksum: str) -> str:
    """Move the built file at ``path`` into storage; returns its storage name."""
    name = f"exports/{export.project.slug}/export-{export.pk}-{checksum[:12]}.{export.format}"
    # A previous attempt may have stored this very file before dying: replace it.
    if default_storage.exists(name):
        default_storage.delete(name)
    with open(path, "rb") as handle:
        stored = default_storage.save(name, _TempFile(handle, name=path))
    return stored


def export_file_delete(*, name: str) -> None:
    default_storage.delete(name)
