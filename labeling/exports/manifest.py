"""An export's manifest: what was asked, what the file holds, and which code wrote it."""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path

from django.conf import settings

from ..models import Export
from .engine import BuildResult
from .rows import export_columns

_SHA = re.compile(r"^[0-9a-f]{40,64}$")


def _git_dir(root: Path) -> Path | None:
    """The repository's git directory (a worktree's ``.git`` is a file naming it)."""
    dot_git = root / ".git"
    if dot_git.is_dir():
        return dot_git
    if dot_git.is_file():
        line = dot_git.read_text().strip()
        if line.startswith("gitdir:"):
            path = Path(line[len("gitdir:") :].strip())
            return path if path.is_absolute() else (root / path).resolve()
    return None


def git_commit(root: Path) -> str:
    """The checked-out commit, read from the git files (no ``git`` process): ``HEAD``, then the
    branch's loose ref or ``packed-refs`` (a linked worktree keeps these in its common dir).
    Empty when there is no repository or the layout is not understood."""
    try:
        git_dir = _git_dir(root)
        if git_dir is None:
            return ""
        head = (git_dir / "HEAD").read_text().strip()
        if _SHA.match(head):  # detached
            return head
        if not head.startswith("ref:"):
            return ""
        ref = head[len("ref:") :].strip()
        common = git_dir
        if (git_dir / "commondir").is_file():
            common = (git_dir / (git_dir / "commondir").read_text().strip()).resolve()
        for base in (git_dir, common):
            loose = base / ref
            if loose.is_file():
                value = loose.read_text().strip()
                return value if _SHA.match(value) else ""
        packed = common / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                value, _, name = line.partition(" ")
                if name == ref and _SHA.match(value):
                    return value
    except OSError:
        pass
    return ""


@cache
def code_version() -> str:
    """``REDRESS_CODE_VERSION``, else the package version and the git commit if there is one.
    Computed once per process."""
    configured = os.environ.get("REDRESS_CODE_VERSION")
    if configured:
        return configured
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("redress")
    except PackageNotFoundError:
        package = "0+unknown"
    commit = git_commit(Path(settings.BASE_DIR))[:12]
    return f"{package}+{commit}" if commit else package


def export_manifest(*, export: Export, result: BuildResult, split: dict) -> dict:
    """The manifest of a built export (``split``: the request's split, defaults filled in)."""
    spec = export.spec or {}
    return {
        "export": export.pk,
        "project": export.project.slug,
        "queue": export.queue_id,
        "format": export.format,
        "filter": spec.get("filter") or {},
        "include_labels": bool(spec.get("include_labels")),
        "split": split,
        "seed": split.get("seed", 0),
        "exclude_gold_from_train": spec.get("exclude_gold_from_train", True),
        "gold_groups_kept_out_of_train": result.gold_groups,
        "gold_versions": result.gold_versions,
        "rows": result.rows,
        "rows_per_split": result.rows_per_split,
        "columns": [
            {"name": name, "type": kind}
            for name, kind, _ in export_columns(include_labels=bool(spec.get("include_labels")))
        ],
        "order": "queue item id",
        "code_version": code_version(),
    }
