"""Gold sets: create, draft, edit, promote from review, publish (frozen for good), purge.

A gold set has numbered versions. Creating a gold set opens draft v1. Only a draft changes;
there is at most one per gold set, and a new one starts as a copy of the latest published
version (its ``parent``). Publishing records a sha256 over the canonical content
(``labeling.selectors.gold``), ``item_count``, who and when, in one transaction holding the
version row ``FOR UPDATE``; from then on the version is frozen at three layers: these services
(409), the models' guards (``labeling.models.gold``) and, on PostgreSQL, triggers (migration
0003), which also wait for a publish in progress.

Every write locks the draft's row first, so an edit and a publish of the same draft are
serialised: an edit that loses the race sees the version published and is refused.

Promotion copies a completed queue item into a draft: the prediction's input, output and
segment, the consensus as the expectation, and its lineage by value (prediction id,
external_id, model_version, queue item id, label ids, agreement). Only a clear consensus is
promoted: complete, not a tie, not settled by adjudication, with an agreement of at least
``REDRESS_GOLD_MIN_AGREEMENT`` (default 0.66, so two reviewers of three; a request may pass its
own ``min_agreement``). The agreement is the share of the item's labels that agree with its
consensus verdict and, when the consensus names a true label, the lower of that and the share
agreeing with the true label (Dawid-Skene queues: the share agreeing with the estimate).
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Max
from django.utils import timezone

from feedback.errors import Conflict, FieldError, InvalidInput, NotFound
from feedback.models import FeedbackCategory, Project
from feedback.validation import check_string

from ..models import Export, GoldItem, GoldPurge, GoldSet, GoldSetVersion, Label, QueueItem
from ..models.gold import PublishedGoldError, allow_gold_purge
from ..payloads.gold import KEY_MAX_CHARS, GoldItemInput
from ..selectors.gold import (
    CONTENT_FIELDS,
    gold_canonical_bytes,
    gold_item_content,
    goldset_versions_diff,
)
from . import notifications

__all__ = [
    "DEFAULT_MIN_AGREEMENT",
    "gold_item_add",
    "gold_item_promote",
    "gold_item_remove",
    "gold_item_update",
    "goldset_create",
    "goldset_purge",
    "goldset_update",
    "goldset_version_create_draft",
    "goldset_version_discard",
    "goldset_version_publish",
    "goldset_versions_diff",
    "min_agreement_setting",
]

DEFAULT_MIN_AGREEMENT = 0.66
# Fields a copy into a new draft carries over: the content and its lineage.
COPIED_FIELDS = (
    *CONTENT_FIELDS,
    "source_prediction_id",
    "source_external_id",
    "source_model_version",
    "source_item_id",
    "source_label_ids",
    "source_agreement",
)
Verdict = Label.Verdict


def min_agreement_setting() -> float:
    return float(getattr(settings, "REDRESS_GOLD_MIN_AGREEMENT", DEFAULT_MIN_AGREEMENT))


def _person(actor: Any) -> Any:
    """The acting user to record, or None (an API key is not a person)."""
    user_model = get_user_model()
    return actor if isinstance(actor, user_model) and actor.pk is not None else None


# --- what needs the database ---------------------------------------------------------------


def _check_taxonomy(categories: Any, *, project_id: int) -> None:
    """Every category of an item is one of the project's (400 naming each that is not)."""
    taxonomy = _taxonomy(project_id)
    errors = [
        FieldError(
            f"expected.categories[{position}]",
            "unknown_category",
            f"{slug!r} is not a category of this project; valid: {', '.join(sorted(taxonomy))}.",
        )
        for position, slug in enumerate(categories)
        if slug not in taxonomy
    ]
    if errors:
        raise InvalidInput(errors)


def _taxonomy(project_id: int) -> set[str]:
    # Any slug of the project's taxonomy, retired ones included: gold copied from an older
    # version may carry them, and a gold item records what was true when it was made.
    return set(
        FeedbackCategory.objects.filter(project_id=project_id).values_list("slug", flat=True)
    )


# --- gold sets and versions ------------------------------------------------------------------


def goldset_create(
    *, project: Project, slug: str, name: str = "", description: str = "", actor: Any = None
) -> GoldSet:
    """Create a gold set and its first draft (v1, empty). 409 when the slug is taken in the
    project. The values are checked (``labeling.payloads.gold.gold_set_input``)."""
    person = _person(actor)
    with transaction.atomic():
        if GoldSet.objects.filter(project=project, slug=slug).exists():
            raise Conflict.one(
                "slug", "exists", f"Project {project.slug} has a gold set {slug!r} already."
            )
        try:
            with transaction.atomic():  # a savepoint: the race's loser gets a 409, not a 500
                gold_set = GoldSet.objects.create(
                    project=project,
                    slug=slug,
                    name=name or slug,
                    description=description,
                    created_by=person,
                )
        except IntegrityError as exc:
            raise Conflict.one(
                "slug", "exists", f"Project {project.slug} has a gold set {slug!r} already."
            ) from exc
        GoldSetVersion.objects.create(gold_set=gold_set, number=1, created_by=person)
        return gold_set


def goldset_update(*, gold_set: GoldSet, name: str, description: str, actor: Any = None) -> GoldSet:
    """Rename or redescribe a gold set (its slug and project never change: clients know them).
    The values are checked (``gold_set_input``); a blank name keeps the slug as the name."""
    name = name or gold_set.slug
    with transaction.atomic():
        GoldSet.objects.filter(pk=gold_set.pk).update(name=name, description=description)
        gold_set.name, gold_set.description = name, description
        return gold_set


def goldset_version_create_draft(
    *, gold_set: GoldSet, actor: Any = None, notes: str = ""
) -> GoldSetVersion:
    """A new draft numbered after the last version, holding a copy of the latest published
    version's items (lineage included). 409 when the gold set has a draft already. ``notes``
    is checked (``labeling.payloads.gold.version_notes``)."""
    with transaction.atomic():
        # The gold set's row serialises numbering and the one-draft rule (a constraint backs
        # the latter).
        GoldSet.objects.select_for_update().get(pk=gold_set.pk)
        draft = GoldSetVersion.objects.filter(
            gold_set=gold_set, status=GoldSetVersion.Status.DRAFT
        ).first()
        if draft is not None:
            raise Conflict.one(
                "version",
                "draft_exists",
                f"v{draft.number} is a draft already: edit or publish it first.",
            )
        parent = (
            GoldSetVersion.objects.filter(gold_set=gold_set, status=GoldSetVersion.Status.PUBLISHED)
            .order_by("-number")
            .first()
        )
        last = GoldSetVersion.objects.filter(gold_set=gold_set).aggregate(n=Max("number"))["n"]
        version = GoldSetVersion.objects.create(
            gold_set=gold_set,
            number=(last or 0) + 1,
            parent=parent,
            item_count=parent.item_count if parent else 0,
            notes=notes,
            created_by=_person(actor),
        )
        if parent is not None:
            rows = GoldItem.objects.filter(version=parent).values(*COPIED_FIELDS)
            GoldItem.objects.bulk_create(GoldItem(version=version, **row) for row in rows)
        return version


def _locked_draft(version: GoldSetVersion) -> GoldSetVersion:
    """The version's row, locked (plain FOR UPDATE: the PostgreSQL trigger's FOR SHARE must
    wait for it); refused when published. Call inside a transaction."""
    locked = (
        GoldSetVersion.objects.select_for_update(of=("self",))
        .select_related("gold_set", "gold_set__project")
        .filter(pk=version.pk)
        .first()
    )
    if locked is None:
        raise NotFound.one("version", "not_found", f"No version {version.number}.")
    if locked.status == GoldSetVersion.Status.PUBLISHED:
        raise PublishedGoldError(
            f"v{locked.number} of {locked.gold_set.slug} is published and frozen for good; "
            "start a new draft to change its content."
        )
    return locked


def _key_taken(version: GoldSetVersion, key: str) -> Conflict:
    return Conflict.one(
        "key", "exists", f"v{version.number} has an item {key!r} already; update it instead."
    )


def gold_item_add(*, version: GoldSetVersion, item: GoldItemInput, actor: Any = None) -> GoldItem:
    """Add a checked item (``gold_item_input``) to a draft. 400 naming a category the project
    does not have, 409 for a taken key or a published version."""
    clean = item.values()
    _check_taxonomy(clean["expected_categories"], project_id=version.gold_set.project_id)
    with transaction.atomic():
        version = _locked_draft(version)
        if GoldItem.objects.filter(version=version, key=clean["key"]).exists():
            raise _key_taken(version, clean["key"])
        item = GoldItem.objects.create(version=version, **clean)
        GoldSetVersion.objects.filter(pk=version.pk).update(item_count=F("item_count") + 1)
        return item


def gold_item_update(
    *, version: GoldSetVersion, key: str, item: GoldItemInput, actor: Any = None
) -> GoldItem:
    """Change the fields sent of a draft's item (``gold_item_input(partial=True)``;
    ``expected`` is replaced as a whole; a new ``key`` renames it). The lineage is kept: it
    says where the item came from."""
    clean = item.values()
    if "expected_categories" in clean:
        _check_taxonomy(clean["expected_categories"], project_id=version.gold_set.project_id)
    with transaction.atomic():
        version = _locked_draft(version)
        stored = GoldItem.objects.filter(version=version, key=key).first()
        if stored is None:
            raise NotFound.one("key", "not_found", f"v{version.number} has no item {key!r}.")
        new_key = clean.get("key", key)
        if new_key != key and GoldItem.objects.filter(version=version, key=new_key).exists():
            raise _key_taken(version, new_key)
        for name, value in clean.items():
            setattr(stored, name, value)
        stored.save()
        return stored


def gold_item_remove(*, version: GoldSetVersion, keys: list[str], actor: Any = None) -> list[str]:
    """Remove items from a draft by key: all of them or none (404 naming the missing keys)."""
    if not keys or not all(isinstance(key, str) and key for key in keys):
        raise InvalidInput.one("key", "required", "Name the items to remove: ?key=<key>.")
    wanted = sorted(set(keys))
    with transaction.atomic():
        version = _locked_draft(version)
        items = GoldItem.objects.filter(version=version, key__in=wanted)
        found = set(items.values_list("key", flat=True))
        missing = [key for key in wanted if key not in found]
        if missing:
            raise NotFound.one(
                "key",
                "not_found",
                f"v{version.number} has no item {', '.join(repr(k) for k in missing)}; "
                "nothing was removed.",
            )
        items.delete()
        GoldSetVersion.objects.filter(pk=version.pk).update(
            item_count=F("item_count") - len(wanted)
        )
        return wanted


def _check_threshold(value: Any, errors: list[FieldError]) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        errors.append(FieldError("min_agreement", "invalid", "A share of labels, from 0 to 1."))


def promotion_agreement(*, consensus: dict[str, Any], labels: list[Label]) -> float:
    """The share of labels agreeing with the consensus (see the module docstring)."""
    if not labels:
        return 0.0
    shares = [sum(label.verdict == consensus.get("verdict") for label in labels) / len(labels)]
    if consensus.get("true_label"):
        shares.append(
            sum(label.true_label == consensus["true_label"] for label in labels) / len(labels)
        )
    return min(shares)


def gold_item_promote(
    *,
    version: GoldSetVersion,
    item_id: int,
    actor: Any = None,
    key: str | None = None,
    min_agreement: float | None = None,
) -> GoldItem:
    """Copy a completed queue item with a clear consensus into a draft (module docstring).

    404: no such item in the gold set's project. 409: a hidden gold check, an item that is not
    complete, a tie or an adjudicated item, an agreement under the threshold, an item already
    in the draft, a taken key, a published version.
    """
    errors: list[FieldError] = []
    if min_agreement is not None:
        _check_threshold(min_agreement, errors)
    if key is not None:
        check_string(key, "key", errors, max_chars=KEY_MAX_CHARS, allow_blank=False)
    if errors:
        raise InvalidInput(errors)
    threshold = min_agreement if min_agreement is not None else min_agreement_setting()
    with transaction.atomic():
        version = _locked_draft(version)
        item = (
            QueueItem.objects.select_related("queue", "prediction")
            .filter(pk=item_id, queue__project_id=version.gold_set.project_id)
            .first()
        )
        if item is None:
            raise NotFound.one(
                "from_item", "not_found", f"No queue item {item_id} in this gold set's project."
            )
        refusal = _not_promotable(item)
        if refusal is not None:
            raise Conflict.one("from_item", *refusal)
        consensus = item.consensus or {}
        labels = list(Label.objects.filter(item=item).order_by("id"))
        agreement = promotion_agreement(consensus=consensus, labels=labels)
        if agreement < threshold:
            raise Conflict.one(
                "from_item",
                "low_agreement",
                f"Item {item.pk}: {agreement:.0%} of its {len(labels)} labels agree with the "
                f"consensus, under the {threshold:.0%} a gold item needs.",
            )
        prediction = item.prediction
        key = key or prediction.external_id
        if GoldItem.objects.filter(version=version, source_item_id=item.pk).exists():
            raise Conflict.one(
                "from_item",
                "already_promoted",
                f"Item {item.pk} is in v{version.number} already.",
            )
        if GoldItem.objects.filter(version=version, key=key).exists():
            raise _key_taken(version, key)
        gold = GoldItem.objects.create(
            version=version,
            key=key,
            input=prediction.input,
            output=prediction.output,
            expected_verdict=consensus.get("verdict") or "",
            expected_label=consensus.get("true_label") or "",
            expected_categories=sorted(set(consensus.get("categories") or [])),
            segment=prediction.segment or {},
            source_prediction_id=prediction.pk,
            source_external_id=prediction.external_id,
            source_model_version=prediction.model_version,
            source_item_id=item.pk,
            source_label_ids=[label.pk for label in labels],
            source_agreement=round(agreement, 6),
        )
        GoldSetVersion.objects.filter(pk=version.pk).update(item_count=F("item_count") + 1)
        return gold


def _not_promotable(item: QueueItem) -> tuple[str, str] | None:
    """Why an item cannot become gold (code, detail), or None."""
    consensus = item.consensus or {}
    if item.gold_item_id is not None:
        return ("gold_check", f"Item {item.pk} is a hidden gold check, not a reviewed item.")
    if item.status != QueueItem.Status.COMPLETE:
        return ("not_complete", f"Item {item.pk} is not complete ({item.get_status_display()}).")
    if consensus.get("method") == "adjudicated":
        # Reviewers split and a person settled it: a decision, not a clear consensus.
        return (
            "adjudicated",
            f"Item {item.pk} was settled by adjudication, not by a clear consensus; add it "
            "by hand if you trust the decision.",
        )
    if consensus.get("tie") or not consensus.get("verdict"):
        return ("no_consensus", f"Item {item.pk} has no clear consensus verdict.")
    return None


def goldset_version_publish(
    *, version: GoldSetVersion, actor: Any = None, notes: str | None = None
) -> GoldSetVersion:
    """Freeze a draft for good: checksum, item count, who and when (and ``notes`` if given),
    in one transaction. 409 when it is published already or empty. ``notes`` is checked
    (``version_notes``).
    """
    with transaction.atomic():
        version = _locked_draft(version)
        rows = list(GoldItem.objects.filter(version=version).values(*CONTENT_FIELDS))
        if not rows:
            raise Conflict.one(
                "version", "empty", f"v{version.number} has no items: nothing to publish."
            )
        content = gold_canonical_bytes(items=[gold_item_content(row) for row in rows])
        version.status = GoldSetVersion.Status.PUBLISHED
        version.checksum = hashlib.sha256(content).hexdigest()
        version.item_count = len(rows)
        version.published_at = timezone.now()
        version.published_by = _person(actor)
        if notes:
            version.notes = notes
        version.save(
            update_fields=[
                "status",
                "checksum",
                "item_count",
                "published_at",
                "published_by",
                "notes",
            ]
        )
        notifications.goldset_published_emit(version=version)
        return version


def goldset_version_discard(*, version: GoldSetVersion, actor: Any = None) -> int:
    """Delete a draft and its items (a fresh draft copies the latest published again).
    Returns the number of items dropped; 409 for a published version."""
    with transaction.atomic():
        version = _locked_draft(version)
        dropped = GoldItem.objects.filter(version=version).count()
        version.delete()
        return dropped


def goldset_purge(
    *, gold_set: GoldSet, actor: Any = None, actor_name: str = "", reason: str = ""
) -> dict[str, int]:
    """Delete a gold set with every version, published ones included: the one deliberate
    escape from immutability (an erasure request, a set created by mistake).

    Whole versions only, and never without a record: a ``GoldPurge`` row (who, which set and
    versions with their checksums, when, why) is written first, in the same transaction; on
    PostgreSQL the gold triggers let published gold go only when such a row of the current
    transaction names its set, and refuse a commit that would keep a published version
    without all of its items. Hidden gold checks served from its items go too (their queue
    items and labels cascade). 409 while an export of one of its versions exists (exports keep
    their gold version). ``actor_name`` names who purged when there is no user (a command run
    by an operator). Returns the counts and the record's id.
    """
    with transaction.atomic():
        gold_set = GoldSet.objects.select_for_update().select_related("project").get(pk=gold_set.pk)
        if Export.objects.filter(gold_version__gold_set=gold_set).exists():
            raise Conflict.one(
                "gold_set", "in_use", f"{gold_set} has exports of its versions; delete those first."
            )
        versions = list(GoldSetVersion.objects.filter(gold_set=gold_set).order_by("-number"))
        counts = {
            "versions": len(versions),
            "items": GoldItem.objects.filter(version__gold_set=gold_set).count(),
        }
        person = actor if getattr(actor, "is_authenticated", False) else None
        record = GoldPurge(
            project=gold_set.project,
            project_slug=gold_set.project.slug,
            gold_set_id_purged=gold_set.pk,
            gold_set_slug=gold_set.slug,
            versions=[
                {
                    "number": version.number,
                    "status": version.status,
                    "item_count": version.item_count,
                    "checksum": version.checksum,
                }
                for version in reversed(versions)
            ],
            items_count=counts["items"],
            reason=reason,
            purged_by=person,
            purged_by_name=person.get_username() if person is not None else actor_name[:150],
        )
        on_postgres = connection.vendor == "postgresql"
        if on_postgres:
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL redress.gold_purge = 'on'")
                cursor.execute("SELECT txid_current()")
                record.transaction_id = cursor.fetchone()[0]
        record.save()
        with allow_gold_purge():
            # Newest first: a version's parent is PROTECTed while a child points at it.
            for version in versions:
                version.delete()
            gold_set.delete()
        if on_postgres:
            # The escape ends here, not with a caller's wider transaction. (On an exception the
            # rollback, to a savepoint or of the transaction, reverts the SET LOCAL itself.)
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL redress.gold_purge = 'off'")
        return {**counts, "record": record.pk}
