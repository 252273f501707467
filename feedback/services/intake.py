"""Intake: logging predictions and submitting feedback, one item or a batch of them.

One code path serves the single and the batch endpoints: a single request is a batch of one.
Each call validates every item (refusals are kept per index), then stores the valid ones in one
transaction with a handful of statements whatever the batch size:

    SELECT the referenced predictions         (one query)
    SELECT earlier uses of idempotency keys   (one query, only when keys are given; the
                                              replayed rows are loaded only when some were used)
    INSERT new inline predictions             (one multi-row INSERT)
    INSERT feedback                           (one multi-row INSERT … RETURNING id)
    INSERT feedback ↔ category links          (one multi-row INSERT)

Races are settled by the database's unique constraints, not by locks: when a concurrent request
inserts the same idempotency key or external_id first, the transaction rolls back and the
items are resolved again against what is now stored (a replay or a conflict), so two
simultaneous requests with one key create one row. Nothing here talks to the broker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from ..errors import FieldError
from ..models import Feedback, Prediction
from ..pii import pseudonymise, scrub_text, scrub_value
from ..selectors import KeyContext
from ..validation import (
    CleanFeedback,
    CleanPrediction,
    validate_feedback,
    validate_idempotency_key,
    validate_prediction,
)

MAX_RACE_RETRIES = 3
CREATED, REPLAYED, INVALID, CONFLICT = 201, 200, 400, 409


@dataclass(slots=True)
class ItemResult:
    index: int
    status: int
    obj: Any = None
    errors: list[FieldError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in (CREATED, REPLAYED)


# --- predictions -----------------------------------------------------------------------------


def _conflict(path: str, detail: str) -> list[FieldError]:
    return [FieldError(path, "conflict", detail)]


def _prediction_matches(stored: Prediction, clean: CleanPrediction) -> bool:
    if stored.content_hash != clean.content_hash:
        return False
    return clean.occurred_at is None or stored.occurred_at == clean.occurred_at


def _new_prediction(project_id: int, clean: CleanPrediction, now) -> Prediction:
    return Prediction(
        project_id=project_id,
        external_id=clean.external_id,
        model=clean.model,
        model_version=clean.model_version,
        input=clean.input,
        output=clean.output,
        label=clean.label,
        confidence=clean.confidence,
        segment=clean.segment,
        occurred_at=clean.occurred_at or now,
        content_hash=clean.content_hash,
        created_at=now,
    )


def _resolve_predictions(
    project_id: int,
    cleans: list[tuple[int, CleanPrediction, str]],
    stored: dict[str, Prediction],
    now,
) -> tuple[dict[int, tuple[int, Prediction | None, list[FieldError]]], list[Prediction]]:
    """Match inline predictions against stored ones.

    Returns, per item index, (status, prediction, errors), and the predictions to insert.
    ``path`` names the field for conflict errors (``external_id`` or ``prediction``).
    """
    outcome: dict[int, tuple[int, Prediction | None, list[FieldError]]] = {}
    pending: dict[str, Prediction] = {}
    for index, clean, path in cleans:
        existing = stored.get(clean.external_id) or pending.get(clean.external_id)
        if existing is None:
            prediction = _new_prediction(project_id, clean, now)
            pending[clean.external_id] = prediction
            outcome[index] = (CREATED, prediction, [])
        elif _prediction_matches(existing, clean):
            outcome[index] = (REPLAYED, existing, [])
        else:
            outcome[index] = (
                CONFLICT,
                None,
                _conflict(
                    path,
                    f"A prediction {clean.external_id!r} is already logged with other content; "
                    "external_id is unique per project.",
                ),
            )
    return outcome, list(pending.values())


def _stored_predictions(project_id: int, external_ids: set[str]) -> dict[str, Prediction]:
    if not external_ids:
        return {}
    return {
        p.external_id: p
        for p in Prediction.objects.filter(project_id=project_id, external_id__in=external_ids)
    }


# What feedback needs of a stored prediction: the key to refer to it, the segment to merge, and
# what an inline prediction is compared with. The rest (input, output: JSON) loads on access.
FEEDBACK_PREDICTION_COLUMNS = ("id", "project_id", "external_id", "segment", "content_hash",
                               "occurred_at")


def _referenced_predictions(project_id: int, external_ids: set[str]) -> dict[str, Prediction]:
    """``_stored_predictions`` for feedback, in plain SQL: the ORM query cost more than the
    INSERT on the single-item path (bench profile), and loading the prediction's JSON input
    and output cost more than validating the item on the batch path."""
    if not external_ids:
        return {}
    quote = connection.ops.quote_name
    columns = ", ".join(
        quote(Prediction._meta.get_field(name).column) for name in FEEDBACK_PREDICTION_COLUMNS
    )
    matches, params = _any_of("external_id", external_ids)
    rows = Prediction.objects.raw(
        f"SELECT {columns} FROM {quote(Prediction._meta.db_table)} "
        f"WHERE project_id = %s AND {matches}",
        [project_id, *params],
    )
    return {p.external_id: p for p in rows}


def _any_of(column: str, values: set[str]) -> tuple[str, list[Any]]:
    """``column IN (%s, …)``, or on PostgreSQL ``column = ANY(%s)``: one array parameter
    instead of up to 1,000 placeholders, cheaper to bind and to plan."""
    if connection.vendor == "postgresql":
        return f"{column} = ANY(%s)", [list(values)]
    return f"{column} IN ({', '.join(['%s'] * len(values))})", list(values)


def predictions_log(
    *, context: KeyContext, items: list[Any], prefix_items: bool
) -> list[ItemResult]:
    """Log predictions. Same external_id and content: 200 with the stored row; other: 409."""
    results: list[ItemResult] = []
    cleans: list[tuple[int, CleanPrediction, str]] = []
    for index, data in enumerate(items):
        errors: list[FieldError] = []
        prefix = f"items[{index}]" if prefix_items else ""
        clean = validate_prediction(data, prefix, errors)
        if clean is None:
            results.append(ItemResult(index, INVALID, errors=errors))
        else:
            path = f"{prefix}.external_id" if prefix else "external_id"
            cleans.append((index, clean, path))
            results.append(ItemResult(index, CREATED))
    if not cleans:
        return results

    for attempt in range(MAX_RACE_RETRIES):
        now = timezone.now()
        stored = _stored_predictions(context.project_id, {c.external_id for _, c, _ in cleans})
        outcome, to_create = _resolve_predictions(context.project_id, cleans, stored, now)
        try:
            with transaction.atomic():
                Prediction.objects.bulk_create(to_create)
        except IntegrityError:
            if attempt == MAX_RACE_RETRIES - 1:
                raise
            continue  # a concurrent request logged one of them first: resolve again
        break
    for index, (status, prediction, errors) in outcome.items():
        result = results[index]
        result.status, result.obj, result.errors = status, prediction, errors
    # The second occurrence of a new external_id within one batch replays the first.
    seen: set[int] = set()
    for result in results:
        if result.status == CREATED and result.obj is not None:
            if id(result.obj) in seen:
                result.status = REPLAYED
            seen.add(id(result.obj))
    return results


# --- feedback --------------------------------------------------------------------------------


def feedback_submit(
    *,
    context: KeyContext,
    items: list[Any],
    idempotency_keys: list[Any] | None = None,
    prefix_items: bool = True,
    item_key_field: bool = True,
) -> list[ItemResult]:
    """Store feedback items; returns one result per item, in order.

    ``idempotency_keys`` (single endpoint: the header) overrides per-item keys; with
    ``item_key_field`` each item may carry its own ``idempotency_key`` (batch endpoint).
    A replay of a key with the same body answers 200 with the stored feedback; with another
    body, 409. Invalid items (400) never stop valid ones from being stored.
    """
    extra = frozenset({"idempotency_key"}) if item_key_field else frozenset()
    results: list[ItemResult] = []
    cleans: list[tuple[int, CleanFeedback]] = []
    for index, data in enumerate(items):
        errors: list[FieldError] = []
        prefix = f"items[{index}]" if prefix_items else ""
        clean = validate_feedback(
            data, prefix, errors, categories=context.categories, extra_fields=extra
        )
        if idempotency_keys is not None:
            key = validate_idempotency_key(idempotency_keys[index], None, errors)
        elif item_key_field and isinstance(data, dict):
            key_path = f"{prefix}.idempotency_key" if prefix else "idempotency_key"
            key = validate_idempotency_key(data.get("idempotency_key"), key_path, errors)
        else:
            key = None
        if clean is None or errors:
            results.append(ItemResult(index, INVALID, errors=errors))
            continue
        clean.idempotency_key = key
        cleans.append((index, clean))
        results.append(ItemResult(index, CREATED))
    if not cleans:
        return results

    for attempt in range(MAX_RACE_RETRIES):
        try:
            outcome = _store_feedback(context, cleans, prefix_items)
        except IntegrityError:
            if attempt == MAX_RACE_RETRIES - 1:
                raise
            continue  # lost a race on an idempotency key or an external_id: resolve again
        break
    for index, (status, obj, errors) in outcome.items():
        result = results[index]
        result.status, result.obj, result.errors = status, obj, errors
    return results


def _store_feedback(
    context: KeyContext, cleans: list[tuple[int, CleanFeedback]], prefix_items: bool
) -> dict[int, tuple[int, Feedback | None, list[FieldError]]]:
    now = timezone.now()
    project_id = context.project_id
    outcome: dict[int, tuple[int, Feedback | None, list[FieldError]]] = {}

    def path(index: int, name: str) -> str:
        return f"items[{index}].{name}" if prefix_items else name

    # 1. Idempotency: earlier uses of the keys (stored, or earlier in this batch).
    keys = {c.idempotency_key for _, c in cleans if c.idempotency_key is not None}
    previous: dict[str, Feedback] = {}
    used = _used_keys(project_id, keys) if keys else set()
    if used:  # replays are rare: load the stored feedback only for keys seen before
        previous = {
            f.idempotency_key: f
            for f in Feedback.objects.filter(project_id=project_id, idempotency_key__in=used)
            .select_related("prediction")
            .prefetch_related("categories")
        }
    fresh: list[tuple[int, CleanFeedback]] = []
    first_in_batch: dict[str, tuple[int, CleanFeedback]] = {}
    replays_in_batch: list[tuple[int, int]] = []  # (index, index of the first use)
    for index, clean in cleans:
        key = clean.idempotency_key
        if key is not None and key in previous:
            stored = previous[key]
            if stored.request_hash == clean.request_hash:
                outcome[index] = (REPLAYED, stored, [])
            else:
                outcome[index] = (CONFLICT, None, _key_conflict(key, prefix_items, index))
            continue
        if key is not None and key in first_in_batch:
            first_index, first = first_in_batch[key]
            if first.request_hash == clean.request_hash:
                replays_in_batch.append((index, first_index))
            else:
                outcome[index] = (CONFLICT, None, _key_conflict(key, prefix_items, index))
            continue
        if key is not None:
            first_in_batch[key] = (index, clean)
        fresh.append((index, clean))

    # 2. Predictions: references must exist; inline ones are logged if new.
    referenced = {c.prediction_ref for _, c in fresh if c.prediction_ref is not None}
    inline = [
        (index, c.prediction_inline, path(index, "prediction"))
        for index, c in fresh
        if c.prediction_inline is not None
    ]
    stored_predictions = _referenced_predictions(
        project_id, referenced | {p.external_id for _, p, _ in inline}
    )
    inline_outcome, to_create = _resolve_predictions(project_id, inline, stored_predictions, now)

    to_insert: list[tuple[int, CleanFeedback, Feedback]] = []
    for index, clean in fresh:
        if clean.prediction_ref is not None:
            prediction = stored_predictions.get(clean.prediction_ref)
            if prediction is None:
                outcome[index] = (
                    INVALID,
                    None,
                    [
                        FieldError(
                            path(index, "prediction"),
                            "unknown_prediction",
                            f"No prediction {clean.prediction_ref!r} is logged in this project; "
                            "log it first or send the prediction object inline.",
                        )
                    ],
                )
                continue
        else:
            status, prediction, errors = inline_outcome[index]
            if status == CONFLICT:
                outcome[index] = (CONFLICT, None, errors)
                continue
        to_insert.append((index, clean, _new_feedback(context, clean, prediction, now)))

    # 3. Write everything in one transaction.
    with transaction.atomic():
        if to_create:
            Prediction.objects.bulk_create(to_create)
        Feedback.objects.bulk_create([feedback for _, _, feedback in to_insert])
        links = [
            (feedback.pk, category_id)
            for _, clean, feedback in to_insert
            for category_id in clean.category_ids
        ]
        if links:
            _insert_links(links)

    for index, clean, feedback in to_insert:
        feedback.category_slugs = clean.category_slugs  # for rendering without a query
        outcome[index] = (CREATED, feedback, [])
    for index, first_index in replays_in_batch:
        status, obj, errors = outcome[first_index]
        outcome[index] = (REPLAYED if status == CREATED else status, obj, errors)
    return outcome


def _used_keys(project_id: int, keys: set[str]) -> set[str]:
    """The ``keys`` this project has stored feedback under: a bare probe of the unique index.

    Most keys are new. Plain SQL here costs a fraction of the ORM query (a join and a prefetch)
    that loads the replays, which on the single endpoint cost more than the INSERT itself.
    """
    table = connection.ops.quote_name(Feedback._meta.db_table)
    matches, params = _any_of("idempotency_key", keys)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT idempotency_key FROM {table} WHERE project_id = %s AND {matches}",
            [project_id, *params],
        )
        return {row[0] for row in cursor.fetchall()}


def _insert_links(links: list[tuple[int, int]]) -> None:
    """INSERT feedback ↔ category rows, (feedback_id, category_id) pairs: what ``bulk_create``
    of the through model does (UNNEST of two arrays on PostgreSQL, multi-row VALUES elsewhere),
    without building a model per link (two per feedback item, so it showed in the batch
    profile)."""
    through = Feedback.categories.through
    fields = [through._meta.get_field("feedback"), through._meta.get_field("feedbackcategory")]
    quote = connection.ops.quote_name
    head = (
        f"INSERT INTO {quote(through._meta.db_table)} "
        f"({', '.join(quote(f.column) for f in fields)}) "
    )
    if connection.vendor == "postgresql":
        arrays = ", ".join(f"%s::{f.db_type(connection).split('(')[0]}[]" for f in fields)
        with connection.cursor() as cursor:
            cursor.execute(
                f"{head}SELECT * FROM UNNEST({arrays})",
                [[link[0] for link in links], [link[1] for link in links]],
            )
        return
    head += "VALUES "
    size = max(1, connection.ops.bulk_batch_size(fields, links))  # SQLite: 999 parameters
    with connection.cursor() as cursor:
        for start in range(0, len(links), size):
            chunk = links[start : start + size]
            cursor.execute(
                head + ", ".join(["(%s, %s)"] * len(chunk)),
                [value for link in chunk for value in link],
            )


def _key_conflict(key: str, prefix_items: bool, index: int) -> list[FieldError]:
    field_name = f"items[{index}].idempotency_key" if prefix_items else "Idempotency-Key"
    return _conflict(
        field_name, f"Idempotency key {key!r} was already used with a different body."
    )


def _new_feedback(
    context: KeyContext, clean: CleanFeedback, prediction: Prediction, now
) -> Feedback:
    comment, correction = clean.comment, clean.correction
    if context.scrub_pii:
        comment = scrub_text(comment)
        correction = scrub_value(correction)
    return Feedback(
        project_id=context.project_id,
        prediction=prediction,
        kind=clean.kind,
        rating=clean.rating,
        comment=comment,
        correction=correction,
        end_user=pseudonymise(context.project_secret, clean.end_user) if clean.end_user else "",
        segment={**(prediction.segment or {}), **clean.segment},
        idempotency_key=clean.idempotency_key,
        request_hash=clean.request_hash,
        status=Feedback.DisputeStatus.OPEN if clean.kind == Feedback.Kind.DISPUTE else None,
        created_at=now,
    )
