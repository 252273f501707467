"""An export's manifest: what was asked, what the file holds, and which code wrote it."""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path

from django.conf import settings

from ..models import Export
from .engine import BuildResult
from .rows import ExportPlan

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


# How each column kind is encoded, per format: the manifest says it so a reader need not guess.
ENCODINGS = {
    "jsonl": {
        "json": "a JSON value (objects stay objects)",
        "list": "a JSON array of strings",
        "timestamp": "ISO 8601 text in UTC (+00:00)",
    },
    "csv": {
        "json": "JSON text (parse it: json.loads)",
        "list": "JSON text of an array of strings",
        "timestamp": "ISO 8601 text in UTC (+00:00)",
        "null": "an empty field",
    },
    "parquet": {
        "json": "JSON text in a string column (field metadata redress.kind = json)",
        "list": "list<string>",
        "timestamp": "timestamp[us, UTC]",
    },
}
JSON_STYLE = (
    "PostgreSQL's jsonb text on every path: ', ' and ': ' separators, object keys shorter "
    "first then by bytes, non-ASCII as is"
)
ORDER = "prediction id, then queue item id (the same on PostgreSQL and SQLite)"


def file_manifest(
    *, export: Export, plan: ExportPlan, rows: int, rows_per_split: dict, gold_versions: list
) -> dict:
    """What the file says about itself (embedded in Parquet's key-value metadata under
    ``redress.manifest``): the request, the counts, the columns and their encoding, the gold
    versions and the code version. Nothing about this build in particular (the export id, who
    asked, when): the same request over the same data still gives the same bytes."""
    spec = export.spec or {}
    split = plan.split.as_dict()
    columns = plan.columns()
    return {
        "project": export.project.slug,
        "queue": export.queue_id,
        "format": export.format,
        "filter": spec.get("filter") or {},
        "include_labels": plan.include_labels,
        "include_comments": plan.include_comments,
        "split": split,
        "seed": split.get("seed"),
        "exclude_gold_from_train": spec.get("exclude_gold_from_train", True),
        "gold_groups_kept_out_of_train": len(plan.gold_groups),
        "gold_versions": gold_versions,
        "rows": rows,
        "rows_per_split": rows_per_split,
        "segment_columns": [f"segment.{key}" for key in plan.segment_keys],
        "columns": [
            {"name": name, "type": kind, "nullable": nullable} for name, kind, nullable in columns
        ],
        "encoding": {
            kind: text
            for kind, text in ENCODINGS[export.format].items()
            if kind == "null" or any(k == kind for _, k, _ in columns)
        },
        "json_style": JSON_STYLE,
        "weight": "1 / inclusion_probability (Horvitz-Thompson)",
        "order": ORDER,
        "code_version": code_version(),
    }


def export_manifest(*, export: Export, result: BuildResult) -> dict:
    """The manifest of a built export as the API shows it: the file's own (``file_manifest``)
    and which export it is."""
    return {"export": export.pk, **(result.manifest or {})}
