"""Read queries of gold sets: who may curate them, lists, items, canonical content and diffs.

Gold content is private (DESIGN.md): only data scientists and project admins of the project
(``READ_ROLES``) and its API keys with the ``data`` scope read it. Reviewers never do; the
hidden gold checks served in queues look like any other item.

The canonical content of a version is what its checksum covers: its items sorted by key (in
Unicode code point order, the same on every database), each as ``{"key", "input", "output",
"expected": {"verdict", "label", "categories"}, "segment"}``, encoded as canonical JSON (keys
sorted, no spaces, UTF-8). Lineage is left out on purpose: it records where an item came from,
not what it asserts, so re-publishing the same content gives the same checksum.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Max, Q, QuerySet

from feedback.selectors import projects_for_user
from feedback.validation import canonical_json

from ..models import GoldItem, GoldSet, GoldSetVersion
from .queues import READ_ROLES

# Who curates gold: the roles that read a project's data (data scientists, project admins).
GOLD_ROLES = READ_ROLES
CONTENT_FIELDS = (
    "key",
    "input",
    "output",
    "expected_verdict",
    "expected_label",
    "expected_categories",
    "segment",
)


def gold_projects_for(*, user: AbstractBaseUser):
    """Projects whose gold sets a person may read and curate."""
    return projects_for_user(user=user, roles=GOLD_ROLES)


def can_curate_gold(*, user: AbstractBaseUser, project_id: int) -> bool:
    if not user.is_authenticated:
        return False
    return gold_projects_for(user=user).filter(pk=project_id).exists()


def goldset_list(*, project_ids: Any) -> QuerySet[GoldSet]:
    """Gold sets of these projects with their latest published and draft version numbers."""
    published = Q(versions__status=GoldSetVersion.Status.PUBLISHED)
    return (
        GoldSet.objects.filter(project_id__in=project_ids)
        .select_related("project", "created_by")
        .annotate(
            latest_published=Max("versions__number", filter=published),
            draft_number=Max(
                "versions__number", filter=Q(versions__status=GoldSetVersion.Status.DRAFT)
            ),
            version_count=Count("versions"),
        )
        .order_by("project__slug", "slug")
    )


def goldset_versions(*, gold_set: GoldSet) -> QuerySet[GoldSetVersion]:
    return (
        GoldSetVersion.objects.filter(gold_set=gold_set)
        .select_related("parent", "published_by", "created_by")
        .order_by("number")
    )


def gold_items(*, version: GoldSetVersion) -> QuerySet[GoldItem]:
    return GoldItem.objects.filter(version=version).order_by("key", "id")


def gold_item_content(item: GoldItem | dict[str, Any]) -> dict[str, Any]:
    """What an item asserts, in its canonical shape (blank expectations are null)."""
    get = item.get if isinstance(item, dict) else lambda name: getattr(item, name)
    return {
        "key": get("key"),
        "input": get("input"),
        "output": get("output"),
        "expected": {
            "verdict": get("expected_verdict") or None,
            "label": get("expected_label") or None,
            "categories": list(get("expected_categories") or []),
        },
        "segment": get("segment") or {},
    }


def gold_version_contents(version: GoldSetVersion) -> dict[str, dict[str, Any]]:
    """Each item's canonical content (``gold_item_content``) by key, in one query."""
    rows = GoldItem.objects.filter(version=version).values(*CONTENT_FIELDS)
    return {row["key"]: gold_item_content(row) for row in rows}


def gold_canonical_bytes(*, items: list[dict[str, Any]]) -> bytes:
    """Canonical JSON of item contents (``gold_item_content``), sorted by key here: never rely
    on the database's collation, which differs between PostgreSQL and SQLite."""
    ordered = sorted(items, key=lambda content: content["key"])
    return canonical_json(ordered).encode("utf-8")


def gold_version_canonical_bytes(*, version: GoldSetVersion) -> bytes:
    return gold_canonical_bytes(items=list(gold_version_contents(version).values()))


def gold_version_checksum(*, version: GoldSetVersion) -> str:
    """sha256 of the version's canonical content as stored now (recomputed, not the record)."""
    return hashlib.sha256(gold_version_canonical_bytes(version=version)).hexdigest()


def goldset_versions_diff(
    *, version: GoldSetVersion, against: GoldSetVersion
) -> dict[str, list[str]]:
    """Keys added to ``version`` since ``against``, removed from it, and changed (same key,
    other content), each sorted. Read-only, two queries; both versions belong to the same gold
    set (the caller checks)."""
    detail = goldset_versions_diff_detail(version=version, against=against)
    return {name: detail[name] for name in ("added", "removed", "changed")}


def goldset_versions_diff_detail(
    *, version: GoldSetVersion, against: GoldSetVersion
) -> dict[str, Any]:
    """``goldset_versions_diff`` plus, per changed key, which content fields differ, and both
    versions' contents by key (``new``, ``old``) for the admin's diff page."""
    new, old = gold_version_contents(version), gold_version_contents(against)
    fields: dict[str, list[str]] = {}
    for key in sorted(new.keys() & old.keys()):
        a, b = new[key], old[key]
        if canonical_json(a) == canonical_json(b):
            continue
        # Compared as canonical JSON: 1, 1.0 and true are equal in Python, not in the checksum.
        differ = [
            name
            for name in ("input", "output", "segment")
            if canonical_json(a[name]) != canonical_json(b[name])
        ]
        differ += [
            f"expected.{name}"
            for name in a["expected"]
            if canonical_json(a["expected"][name]) != canonical_json(b["expected"][name])
        ]
        fields[key] = differ
    return {
        "added": sorted(new.keys() - old.keys()),
        "removed": sorted(old.keys() - new.keys()),
        "changed": list(fields),
        "changed_fields": fields,
        "unchanged": len(new.keys() & old.keys()) - len(fields),
        "new": new,
        "old": old,
    }
