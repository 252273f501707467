"""Intake: logging predictions and submitting feedback, one item or a batch of them.

One code path serves the single and the batch endpoints: a single request is a batch of one.
Each call validates every item, then stores the valid ones in one transaction with a handful
of statements whatever the batch size:

    SELECT the referenced predictions         (one query)
    SELECT earlier uses of idempotency keys   (one query, only when keys are given; the
                                              replayed rows are loaded only when some were used)
    write new predictions                     (COPY from 8 rows on PostgreSQL, else INSERT)
    write feedback                            (likewise; the categories are a column of the row)

The result is domain language: one ``ItemResult`` per item, in order, with an ``Outcome`` and
errors whose paths are relative to the item (``kind``, ``prediction.external_id``,
``idempotency_key``). The API maps outcomes to statuses and prefixes batch paths.

Races are settled by the database's unique constraints, not by locks: when a concurrent request
inserts the same idempotency key or external_id first, the transaction rolls back and the
items are resolved again against what is now stored (a replay or a conflict), so two
simultaneous requests with one key create one row. Any other refusal by the database (a
constraint, a trigger, a value it cannot store) rolls the write back too, and the items are
then stored one at a time, each in its own transaction: the refused ones are reported
(``refused``), the others stored. Nothing here talks to the broker.

Two measures pay on PostgreSQL (README, Benchmarks): one item referring to a logged prediction
(the single endpoint's common case) is one prepared statement in autocommit (a data-modifying
CTE that resolves the prediction and inserts the feedback, ``ON CONFLICT … DO NOTHING`` on the
idempotency key; when it stores nothing the general path answers), and batches reserve their
ids from the sequence and ``COPY`` the rows, in key order (two batches sharing keys wait for
each other instead of deadlocking).

Adding a column to ``Feedback``: the model, ``_feedback_values`` (what the row holds),
``FEEDBACK_COPY_COLUMNS`` and ``SINGLE_INSERT_SQL`` with its parameters.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

import psycopg
from django.db import (
    DEFAULT_DB_ALIAS,
    DataError,
    IntegrityError,
    InternalError,
    ProgrammingError,
    connection,
    connections,
    transaction,
)
from django.db.models.base import ModelState
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
# From this many rows a batch is written with COPY on PostgreSQL (below it, the two extra
# round trips of reserving ids and a second COPY cost more than multi-row INSERTs save).
COPY_MIN_ROWS = 8
# Plain strings (not the enum members): COPY and json take them as they are.
OPEN, DISPUTE = Feedback.DisputeStatus.OPEN.value, Feedback.Kind.DISPUTE.value
# What the database may refuse about an item's values (a constraint, a trigger, a value it
# cannot store). Connection loss and timeouts (OperationalError) are outages, not refusals.
REFUSALS = (IntegrityError, DataError, InternalError)


class Outcome(enum.StrEnum):
    CREATED = "created"  # stored now
    REPLAYED = "replayed"  # stored before with the same content: the stored row
    INVALID = "invalid"  # refused (validation, an unknown prediction, the database)
    CONFLICT = "conflict"  # the external_id or idempotency key is taken by other content
    UPDATED = "updated"  # a browser end user's rating, changed in place (origin token)


CREATED, REPLAYED, INVALID, CONFLICT, UPDATED = (
    Outcome.CREATED, Outcome.REPLAYED, Outcome.INVALID, Outcome.CONFLICT, Outcome.UPDATED
)
TOKEN, RATING = Feedback.Origin.TOKEN.value, Feedback.Kind.RATING.value


@dataclass(slots=True)
class ItemResult:
    index: int
    outcome: Outcome
    obj: Any = None
    errors: list[FieldError] = field(default_factory=list)
    external_id: str | None = None  # the prediction's, when the item named one

    @property
    def ok(self) -> bool:
        return self.outcome is CREATED or self.outcome is REPLAYED or self.outcome is UPDATED


Resolved = dict[int, tuple[Outcome, Any, list[FieldError]]]


def _conflict(path: str, detail: str) -> list[FieldError]:
    return [FieldError(path, "conflict", detail)]


def _is_unique_violation(exc: IntegrityError) -> bool:
    cause = exc.__cause__
    if isinstance(cause, psycopg.Error):
        return cause.sqlstate == "23505"
    return "UNIQUE constraint" in str(exc)


def _refusal(exc: Exception) -> list[FieldError]:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return [FieldError(None, "refused", f"The database refused this item: {message}")]


def _store_items(store: Callable[[list], Resolved], cleans: list) -> Resolved:
    """``store(cleans)``, again after a lost race; when the database refuses the write, each
    item alone, so one bad item never sinks the others."""
    try:
        for attempt in range(MAX_RACE_RETRIES):
            try:
                return store(cleans)
            except IntegrityError as exc:
                if not _is_unique_violation(exc) or attempt == MAX_RACE_RETRIES - 1:
                    raise
                # a concurrent request stored one of these keys or external_ids first
    except REFUSALS as exc:
        if len(cleans) == 1:
            return {cleans[0][0]: (INVALID, None, _refusal(exc))}
        outcome: Resolved = {}
        for one in cleans:
            outcome.update(_store_items(store, [one]))
        return outcome
    raise AssertionError("unreachable")


def stored_instance(model, values: dict[str, Any], db: str):
    """An instance of a stored row from the values at hand, without ``Model.__init__``: its
    per-field bookkeeping cost more than the row's share of the COPY in the batch profile
    (1,000 feedback and 1,000 predictions per request). The result is what ``Model.from_db``
    builds for a query of these columns: fields left out load on access, like deferred ones."""
    instance = model.__new__(model)
    instance.__dict__.update(values)
    state = ModelState()
    state.adding = False
    state.db = db
    instance._state = state
    return instance


def _any_of(column: str, values: set[str]) -> tuple[str, list[Any]]:
    """``column IN (%s, …)``, or on PostgreSQL ``column = ANY(%s)``: one array parameter
    instead of up to 1,000 placeholders, cheaper to bind and to plan."""
    if connection.vendor == "postgresql":
        return f"{column} = ANY(%s)", [list(values)]
    return f"{column} IN ({', '.join(['%s'] * len(values))})", list(values)


# --- predictions -----------------------------------------------------------------------------


def _prediction_matches(stored: Prediction, clean: CleanPrediction) -> bool:
    if stored.content_hash != clean.content_hash:
        return False
    return clean.occurred_at is None or stored.occurred_at == clean.occurred_at


def _prediction_values(project_id: int, clean: CleanPrediction, now) -> dict[str, Any]:
    """A new prediction row's fields (but its id)."""
    return {
        "project_id": project_id,
        "external_id": clean.external_id,
        "model": clean.model,
        "model_version": clean.model_version,
        "input": clean.input,
        "output": clean.output,
        "label": clean.label,
        "confidence": clean.confidence,
        "segment": clean.segment,
        "occurred_at": clean.occurred_at or now,
        "content_hash": clean.content_hash,
        "created_at": now,
    }


PREDICTION_COPY_COLUMNS = (
    "id", "project_id", "external_id", "model", "model_version", "input", "output", "label",
    "confidence", "segment", "occurred_at", "content_hash", "created_at",
)
PREDICTION_JSON_COLUMNS = frozenset({"input", "output", "segment"})


def _insert_predictions(rows: list[dict[str, Any]]) -> list[Prediction]:
    """Store new predictions (inside the caller's transaction); returns them with their ids.
    COPY on PostgreSQL from ``COPY_MIN_ROWS`` rows, in external_id order (the order of
    unique-index locks), ids reserved from the sequence first."""
    if connection.vendor != "postgresql" or len(rows) < COPY_MIN_ROWS:
        created = [Prediction(**values) for values in rows]
        Prediction.objects.bulk_create(created)
        return created
    rows = sorted(rows, key=lambda values: values["external_id"])
    ids = _reserve_ids("feedback_prediction", len(rows))
    db = connection.alias
    created = []
    with connection.wrap_database_errors, connection.cursor() as cursor:
        columns = ", ".join(PREDICTION_COPY_COLUMNS)
        with cursor.cursor.copy(f"COPY feedback_prediction ({columns}) FROM STDIN") as copy:
            for values, prediction_id in zip(rows, ids, strict=True):
                values["id"] = prediction_id
                copy.write_row(
                    [
                        _json_text(values[name]) if name in PREDICTION_JSON_COLUMNS
                        else values[name]
                        for name in PREDICTION_COPY_COLUMNS
                    ]
                )
                created.append(stored_instance(Prediction, values, db))
    return created


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


@cache
def _id_sequence(table: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [table])
        return cursor.fetchone()[0]


def _reserve_ids(table: str, count: int) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(%s) FROM generate_series(1, %s)", [_id_sequence(table), count]
        )
        return [row[0] for row in cursor.fetchall()]


def _resolve_predictions(
    project_id: int,
    cleans: list[tuple[int, CleanPrediction, str]],
    stored: dict[str, Prediction],
    now,
) -> tuple[Resolved, dict[str, dict[str, Any]]]:
    """Match predictions against stored ones: per item index (outcome, stored prediction or
    None for a new one, errors), and the new rows by external_id. ``path`` names the field of
    a conflict (``external_id``, or ``prediction`` for one inside a feedback item)."""
    outcome: Resolved = {}
    pending: dict[str, dict[str, Any]] = {}
    for index, clean, path in cleans:
        existing = stored.get(clean.external_id)
        if existing is not None:
            if _prediction_matches(existing, clean):
                outcome[index] = (REPLAYED, existing, [])
            else:
                outcome[index] = (CONFLICT, None, _prediction_conflict(clean, path))
        elif clean.external_id in pending:  # a second occurrence within one batch
            first = pending[clean.external_id]
            if first["content_hash"] == clean.content_hash and (
                clean.occurred_at is None or clean.occurred_at == first["occurred_at"]
            ):
                outcome[index] = (REPLAYED, None, [])
            else:
                outcome[index] = (CONFLICT, None, _prediction_conflict(clean, path))
        else:
            pending[clean.external_id] = _prediction_values(project_id, clean, now)
            outcome[index] = (CREATED, None, [])
    return outcome, pending


def _prediction_conflict(clean: CleanPrediction, path: str) -> list[FieldError]:
    return _conflict(
        path,
        f"A prediction {clean.external_id!r} is already logged with other content; "
        "external_id is unique per project.",
    )


def _stored_predictions(project_id: int, external_ids: set[str]) -> dict[str, Prediction]:
    if not external_ids:
        return {}
    matches, params = _any_of("external_id", external_ids)
    table = connection.ops.quote_name(Prediction._meta.db_table)
    sql = f"SELECT * FROM {table} WHERE project_id = %s AND {matches}"
    return {p.external_id: p for p in Prediction.objects.raw(sql, [project_id, *params])}


# What feedback needs of a stored prediction: the key to refer to it, the segment to merge, and
# what an inline prediction is compared with. The rest (input, output: JSON) loads on access.
FEEDBACK_PREDICTION_COLUMNS = ("id", "project_id", "external_id", "segment", "content_hash",
                               "occurred_at")


def _referenced_predictions(
    project_id: int, external_ids: set[str], *, compared: bool = True
) -> dict[str, Prediction]:
    """``_stored_predictions`` for feedback, in plain SQL: the ORM query cost more than the
    INSERT on the single-item path (bench profile), and loading the prediction's JSON input
    and output cost more than validating the item on the batch path. Without ``compared`` (no
    inline prediction to compare) content_hash and occurred_at are left to load on access."""
    if not external_ids:
        return {}
    names = FEEDBACK_PREDICTION_COLUMNS if compared else FEEDBACK_PREDICTION_COLUMNS[:4]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(Prediction._meta.get_field(name).column) for name in names)
    matches, params = _any_of("external_id", external_ids)
    sql = (
        f"SELECT {columns} FROM {quote(Prediction._meta.db_table)} "
        f"WHERE project_id = %s AND {matches}"
    )
    if connection.vendor != "postgresql":  # the backend's converters (SQLite: text dates)
        return {p.external_id: p for p in Prediction.objects.raw(sql, [project_id, *params])}
    with connection.cursor() as cursor:
        cursor.execute(sql, [project_id, *params])
        rows = cursor.fetchall()
    db = connection.alias  # once: each access to ``connection`` is a thread-local lookup
    found = {}
    for row in rows:
        values = dict(zip(names, row, strict=True))
        # Django loads jsonb as text: kept too, for COPY to write back as is (_copy_feedback).
        values["segment_json"] = values["segment"]
        values["segment"] = _segment_from_text(values["segment"])
        found[values["external_id"]] = stored_instance(Prediction, values, db)
    return found


def _segment_from_text(text: str) -> Any:
    """A stored segment, parsed: segments repeat a few combinations (locale, device…), so a
    batch's thousand predictions parse a handful of texts (batch profile). Each caller gets a
    dict of its own."""
    value = _parsed_segment(text)
    return dict(value) if isinstance(value, dict) else json.loads(text)


@lru_cache(maxsize=4096)
def _parsed_segment(text: str) -> Any:
    return json.loads(text)


def predictions_log(*, context: KeyContext, items: list[Any]) -> list[ItemResult]:
    """Log predictions. Same external_id and content: REPLAYED with the stored row; other
    content: CONFLICT."""
    results: list[ItemResult] = []
    cleans: list[tuple[int, CleanPrediction]] = []
    for index, data in enumerate(items):
        errors: list[FieldError] = []
        clean = validate_prediction(data, "", errors)
        external_id = data.get("external_id") if isinstance(data, dict) else None
        result = ItemResult(index, INVALID if clean is None else CREATED, errors=errors)
        result.external_id = external_id if isinstance(external_id, str) else None
        results.append(result)
        if clean is not None:
            cleans.append((index, clean))
    if not cleans:
        return results

    project_id = context.project_id

    def store(batch: list[tuple[int, CleanPrediction]]) -> Resolved:
        now = timezone.now()
        stored = _stored_predictions(project_id, {clean.external_id for _, clean in batch})
        outcome, pending = _resolve_predictions(
            project_id, [(index, clean, "external_id") for index, clean in batch], stored, now
        )
        if pending:
            with transaction.atomic():
                created = {p.external_id: p for p in _insert_predictions(list(pending.values()))}
        else:
            created = {}
        by_index = dict(batch)
        for index, (state, obj, errors) in outcome.items():
            if obj is None and state is not CONFLICT:
                outcome[index] = (state, created[by_index[index].external_id], errors)
        return outcome

    for index, (state, obj, errors) in _store_items(store, cleans).items():
        result = results[index]
        result.outcome, result.obj, result.errors = state, obj, errors
    return results


# --- feedback --------------------------------------------------------------------------------


ITEM_KEY_FIELD = frozenset({"idempotency_key"})


def feedback_submit(
    *,
    context: KeyContext,
    items: list[Any],
    idempotency_keys: list[Any] | None = None,
    origin: str = Feedback.Origin.KEY.value,
) -> list[ItemResult]:
    """Store feedback items; returns one result per item, in order.

    ``idempotency_keys`` gives each item's key from outside the item (the single endpoint's
    header); without it each item may carry its own ``idempotency_key``. A replay of a key with
    the same body is REPLAYED with the stored feedback; with another body, CONFLICT. Refused
    items never stop valid ones from being stored.

    ``origin`` "token" (an end user's browser, ``feedback.api.token_intake``): one rating per
    (prediction, end user), a later one UPDATED in place (the same row and id: a user who
    changes their mind), and one dispute (a second is a CONFLICT naming the first). The
    database backs both (constraints ``feedback_token_one_rating`` / ``_one_dispute``).
    """
    extra = ITEM_KEY_FIELD if idempotency_keys is None else frozenset()
    categories = context.categories
    results: list[ItemResult] = []
    cleans: list[tuple[int, CleanFeedback]] = []
    for index, data in enumerate(items):
        errors: list[FieldError] = []
        clean = validate_feedback(data, errors, categories=categories, extra_fields=extra)
        if idempotency_keys is not None:
            key = validate_idempotency_key(idempotency_keys[index], "idempotency_key", errors)
        elif type(data) is dict and "idempotency_key" in data:
            key = validate_idempotency_key(data["idempotency_key"], "idempotency_key", errors)
        else:
            key = None
        if clean is None or errors:
            results.append(ItemResult(index, INVALID, errors=errors))
            continue
        clean.idempotency_key = key
        cleans.append((index, clean))
        results.append(ItemResult(index, CREATED, external_id=clean.external_id))
    if not cleans:
        return results

    if len(cleans) == 1 and connection.vendor == "postgresql":
        index, clean = cleans[0]
        if clean.prediction_ref is not None:
            stored = _store_one_postgres(context, clean, origin)
            if stored is not None:
                if stored.__dict__.pop("was_updated", False):
                    results[index].outcome = UPDATED
                results[index].obj = stored
                return results
            # Nothing stored: the key was used before or the prediction is unknown (or a race
            # lost, or a refusal): the general path below finds out which and answers.

    outcome = _store_items(lambda batch: _store_feedback(context, batch, origin), cleans)
    for index, (state, obj, errors) in outcome.items():
        result = results[index]
        result.outcome, result.obj, result.errors = state, obj, errors
    return results


def _store_feedback(
    context: KeyContext, cleans: list[tuple[int, CleanFeedback]], origin: str
) -> Resolved:
    now = timezone.now()
    project_id = context.project_id
    outcome: Resolved = {}

    # 1. Idempotency: earlier uses of the keys (stored, or earlier in this batch).
    keys = {c.idempotency_key for _, c in cleans if c.idempotency_key is not None}
    previous: dict[str, Feedback] = {}
    used = _used_keys(project_id, keys) if keys else set()
    if used:  # replays are rare: load the stored feedback only for keys seen before
        previous = {
            f.idempotency_key: f
            for f in Feedback.objects.filter(project_id=project_id, idempotency_key__in=used)
            .select_related("prediction")
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
                outcome[index] = (CONFLICT, None, _key_conflict(key))
            continue
        if key is not None and key in first_in_batch:
            first_index, first = first_in_batch[key]
            if first.request_hash == clean.request_hash:
                replays_in_batch.append((index, first_index))
            else:
                outcome[index] = (CONFLICT, None, _key_conflict(key))
            continue
        if key is not None:
            first_in_batch[key] = (index, clean)
        fresh.append((index, clean))

    # 2. Predictions: references must exist; inline ones are logged if new.
    referenced = {c.prediction_ref for _, c in fresh if c.prediction_ref is not None}
    inline = [
        (index, c.prediction_inline, "prediction")
        for index, c in fresh
        if c.prediction_inline is not None
    ]
    stored_predictions = _referenced_predictions(
        project_id, referenced | {p.external_id for _, p, _ in inline}, compared=bool(inline)
    )
    inline_outcome, to_create = _resolve_predictions(project_id, inline, stored_predictions, now)

    to_insert: list[tuple[int, CleanFeedback]] = []
    for index, clean in fresh:
        if clean.prediction_ref is not None:
            if clean.prediction_ref not in stored_predictions:
                outcome[index] = (
                    INVALID,
                    None,
                    [
                        FieldError(
                            "prediction",
                            "unknown_prediction",
                            f"No prediction {clean.prediction_ref!r} is logged in this project; "
                            "log it first or send the prediction object inline.",
                        )
                    ],
                )
                continue
        elif inline_outcome[index][0] is CONFLICT:
            outcome[index] = inline_outcome[index]
            continue
        to_insert.append((index, clean))

    # 3. Write everything in one transaction.
    with transaction.atomic():
        if origin == TOKEN and to_insert:
            to_insert = _token_earlier(context, to_insert, stored_predictions, outcome, now)
        if to_create:
            stored_predictions.update(
                (p.external_id, p) for p in _insert_predictions(list(to_create.values()))
            )
        rows = []
        for index, clean in to_insert:
            prediction = stored_predictions[clean.external_id]
            rows.append((index, clean, _feedback_values(context, clean, prediction, now, origin)))
        if connection.vendor == "postgresql" and len(rows) >= COPY_MIN_ROWS:
            stored = _copy_feedback(rows, stored_predictions)
        else:
            stored = []
            for _, clean, values in rows:
                feedback = Feedback(**values)
                feedback.prediction = stored_predictions[clean.external_id]
                stored.append(feedback)
            Feedback.objects.bulk_create(stored)

    for (index, _, _), feedback in zip(rows, stored, strict=True):
        outcome[index] = (CREATED, feedback, [])
    for index, first_index in replays_in_batch:
        state, obj, errors = outcome[first_index]
        outcome[index] = (REPLAYED if state is CREATED else state, obj, errors)
    return outcome


def _token_earlier(
    context: KeyContext,
    to_insert: list[tuple[int, CleanFeedback]],
    predictions: dict[str, Prediction],
    outcome: Resolved,
    now,
) -> list[tuple[int, CleanFeedback]]:
    """Browser feedback (origin token) against what the same end users already said about the
    same predictions: a rating given before is changed in place (UPDATED), a dispute filed
    before makes a second one a CONFLICT naming it. Returns the items still to insert.
    Inside the write transaction; a concurrent first rating or dispute is settled by the
    constraints (the caller's retry finds it here)."""
    wanted = {}
    for index, clean in to_insert:
        if clean.kind in (RATING, DISPUTE):
            values = _feedback_values(
                context, clean, predictions[clean.external_id], now, TOKEN
            )
            wanted[index] = (clean, values)
    if not wanted:
        return to_insert
    earlier = {
        (f.prediction_id, f.end_user, f.kind): f
        for f in Feedback.objects.select_for_update()
        .filter(
            project_id=context.project_id,
            origin=TOKEN,
            kind__in=[RATING, DISPUTE],
            prediction_id__in={v["prediction_id"] for _, v in wanted.values()},
            end_user__in={v["end_user"] for _, v in wanted.values()},
        )
        .select_related("prediction")
        .order_by("pk")
    }
    remaining = []
    for index, clean in to_insert:
        found = None
        if index in wanted:
            values = wanted[index][1]
            found = earlier.get((values["prediction_id"], values["end_user"], clean.kind))
        if found is None:
            remaining.append((index, clean))
        elif clean.kind == DISPUTE:
            outcome[index] = (
                CONFLICT,
                None,
                [
                    FieldError(
                        "kind",
                        "dispute_exists",
                        f"This end user already disputed this prediction: dispute {found.pk} "
                        f"({found.status}). Follow it with GET /api/v1/disputes/{found.pk}.",
                    )
                ],
            )
        elif (
            clean.idempotency_key is not None
            and found.idempotency_key == clean.idempotency_key
            and found.request_hash != clean.request_hash
        ):
            outcome[index] = (CONFLICT, None, _key_conflict(clean.idempotency_key))
        else:
            for name in ("rating", "categories", "comment", "correction", "segment",
                         "idempotency_key", "request_hash"):
                setattr(found, name, values[name])
            found.revised_at = now  # the rollup step recounts its hour (TOKEN_RATING_SQL too)
            found.save(update_fields=["rating", "categories", "comment", "correction", "segment",
                                      "idempotency_key", "request_hash", "revised_at"])
            outcome[index] = (UPDATED, found, [])
    return remaining


def _key_conflict(key: str) -> list[FieldError]:
    return _conflict(
        "idempotency_key", f"Idempotency key {key!r} was already used with a different body."
    )


def _feedback_values(
    context: KeyContext,
    clean: CleanFeedback,
    prediction: Prediction,
    now,
    origin: str = Feedback.Origin.KEY.value,
) -> dict[str, Any]:
    """A new feedback row's fields (but its id): the one place that says what a row holds."""
    comment, correction, end_user = _scrubbed(context, clean)
    segment = prediction.segment
    return {
        "project_id": context.project_id,
        "prediction_id": prediction.pk,
        "kind": clean.kind,
        "rating": clean.rating,
        "categories": clean.category_slugs,
        "comment": comment,
        "correction": correction,
        "end_user": end_user,
        "segment": {**segment, **clean.segment} if isinstance(segment, dict) else clean.segment,
        "idempotency_key": clean.idempotency_key,
        "request_hash": clean.request_hash,
        "status": OPEN if clean.kind == DISPUTE else None,
        "resolution_note": "",
        "resolved_at": None,
        "resolved_by_id": None,
        "origin": origin,
        "created_at": now,
    }


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


# --- PostgreSQL write paths ------------------------------------------------------------------

# One statement, one round trip, no explicit transaction: resolve the prediction, insert the
# feedback (its categories on the row) unless its idempotency key is taken. The segment is the
# prediction's (when it is an object) updated with the feedback's own, as ``_feedback_values``
# merges it.
SINGLE_INSERT_SQL = """
WITH p AS (
    SELECT id, segment FROM feedback_prediction
    WHERE project_id = %(project_id)s AND external_id = %(external_id)s
), f AS (
    INSERT INTO feedback_feedback (
        project_id, prediction_id, kind, rating, categories, comment, correction, end_user,
        segment, idempotency_key, request_hash, status, resolution_note, origin, created_at
    )
    SELECT %(project_id)s, p.id, %(kind)s, %(rating)s, %(categories)s::jsonb, %(comment)s,
           %(correction)s::jsonb, %(end_user)s,
           CASE WHEN jsonb_typeof(p.segment) = 'object' THEN p.segment ELSE '{}'::jsonb END
               || %(segment)s::jsonb,
           %(idempotency_key)s, %(request_hash)s, %(status)s, '', %(origin)s, %(created_at)s
    FROM p
    ON CONFLICT (project_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, prediction_id, segment, false, created_at
)
SELECT id, prediction_id, segment::text, false, created_at FROM f
"""

# A browser end user's rating (origin token): the same statement, but a rating they gave this
# prediction before is changed in place (one row per prediction and end user), stamped
# ``revised_at`` with this request's time (the rollup step recounts the hours of revised rows).
# Not when the request reuses that row's idempotency key with another body: nothing is
# returned, and the general path answers 409. A clash with another row's idempotency key, or a
# second dispute (constraint ``feedback_token_one_dispute``), raises: the general path answers
# too.
TOKEN_RATING_SQL = SINGLE_INSERT_SQL.replace(
    """    ON CONFLICT (project_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, prediction_id, segment, false, created_at
)
SELECT id, prediction_id, segment::text, false, created_at FROM f""",
    """    ON CONFLICT (prediction_id, end_user) WHERE origin = 'token' AND kind = 'rating'
    DO UPDATE SET rating = EXCLUDED.rating, categories = EXCLUDED.categories,
        comment = EXCLUDED.comment, correction = EXCLUDED.correction,
        segment = EXCLUDED.segment, idempotency_key = EXCLUDED.idempotency_key,
        request_hash = EXCLUDED.request_hash, revised_at = EXCLUDED.created_at
    WHERE EXCLUDED.idempotency_key IS NULL
        OR feedback_feedback.idempotency_key IS DISTINCT FROM EXCLUDED.idempotency_key
        OR feedback_feedback.request_hash = EXCLUDED.request_hash
    RETURNING id, prediction_id, segment, xmax <> 0, created_at
)
SELECT id, prediction_id, segment::text, updated, created_at FROM f""".replace(
        "xmax <> 0, created_at\n)", "xmax <> 0 AS updated, created_at\n)"
    ),
)
assert "DO UPDATE" in TOKEN_RATING_SQL


def _scrubbed(context: KeyContext, clean: CleanFeedback) -> tuple[str, Any, str]:
    """The comment, correction and end user as stored: PII scrubbed, the end user an HMAC."""
    comment, correction = clean.comment, clean.correction
    if context.scrub_pii:
        comment = scrub_text(comment)
        correction = scrub_value(correction)
    end_user = pseudonymise(context.project_secret, clean.end_user) if clean.end_user else ""
    return comment, correction, end_user


class _Unresolved:
    """The prediction of the single statement: only its segment is read, and only when the
    item merges nothing into it (the statement merges in SQL and returns the result)."""

    pk = None
    segment: dict[str, str] = {}


def _store_one_postgres(
    context: KeyContext, clean: CleanFeedback, origin: str = Feedback.Origin.KEY.value
) -> Feedback | None:
    """Store one item referring to a logged prediction in one prepared statement; None when
    nothing was stored (key used before, unknown prediction, a lost race or a refusal), for
    the general path to resolve and answer."""
    now = timezone.now()
    values = _feedback_values(context, clean, _Unresolved, now, origin)
    correction = values["correction"]
    params = {
        **values,
        "external_id": clean.prediction_ref,
        "categories": _encoded_categories(tuple(values["categories"])),
        "correction": None if correction is None else json.dumps(correction),
        "segment": json.dumps(clean.segment) if clean.segment else "{}",
    }
    # Inside a caller's transaction a failed statement must not poison it: a savepoint. Alone
    # (autocommit, as on the request path) the statement is its own transaction: no BEGIN and
    # COMMIT round trips.
    db = connections[DEFAULT_DB_ALIAS]  # once: each ``connection.x`` is a thread-local lookup
    guard = transaction.atomic() if db.in_atomic_block else nullcontext()
    # psycopg's own prepared execution: planning the CTE costs PostgreSQL about as much as
    # running it. With preparation turned off (DJANGO_DB_PREPARE_THRESHOLD=-1, for PgBouncer
    # in transaction mode) it is sent unprepared.
    try:
        with guard, db.wrap_database_errors:
            db.close_if_health_check_failed()
            db.ensure_connection()
            conn = db.connection
            # A server-side-binding cursor (Django's connections make client-side ones, whose
            # statements differ with every value and so cannot be prepared), one per
            # connection: a cursor's set-up showed in the single-item profile.
            cursor = getattr(conn, "_redress_cursor", None)
            if cursor is None or cursor.closed:
                cursor = conn._redress_cursor = psycopg.Cursor(conn)
            prepare = None if conn.prepare_threshold is None else True
            token_rating = origin == TOKEN and clean.kind == RATING
            cursor.execute(
                TOKEN_RATING_SQL if token_rating else SINGLE_INSERT_SQL, params, prepare=prepare
            )
            row = cursor.fetchone()
    except REFUSALS:
        return None  # e.g. the prediction was deleted meanwhile: the general path answers
    except ProgrammingError as exc:
        if getattr(exc.__cause__, "sqlstate", None) != "26000":
            raise
        # invalid_sql_statement_name: the server forgot the statement (a pooler's DISCARD
        # ALL). psycopg's cache still names it: cleared, prepared again next time.
        db.connection._prepared.clear()
        return None
    if row is None:
        return None
    values["id"], values["prediction_id"], segment, updated, values["created_at"] = row
    values["segment"] = json.loads(segment)
    feedback = stored_instance(Feedback, values, db.alias)
    if updated:
        feedback.__dict__["was_updated"] = True  # read (and dropped) by feedback_submit
    feedback.prediction_external_id = clean.prediction_ref  # rendered without a query
    return feedback


@lru_cache(maxsize=1024)
def _encoded_categories(slugs: tuple[str, ...]) -> str:
    """A category list as stored (JSON): a project repeats a few combinations (bench profile)."""
    return json.dumps(list(slugs))


FEEDBACK_COPY_COLUMNS = (
    "id", "project_id", "prediction_id", "kind", "rating", "categories", "comment", "correction",
    "end_user", "segment", "idempotency_key", "request_hash", "status", "resolution_note",
    "origin", "created_at",
)


def _copy_feedback(
    rows: list[tuple[int, CleanFeedback, dict[str, Any]]],
    predictions: dict[str, Prediction],
) -> list[Feedback]:
    """Write feedback rows with COPY (PostgreSQL, inside the caller's transaction); returns the
    stored feedback, in the order of ``rows``. Ids come from the table's sequence first: no
    RETURNING needed."""
    ids = _reserve_ids("feedback_feedback", len(rows))
    stored: list[Feedback] = []
    lines = []
    db = connection.alias
    # Most items add nothing to their prediction's segment: its JSON is the text PostgreSQL
    # gave (_referenced_predictions), else encoded once per prediction (batch profile).
    encoded_segments: dict[int, str] = {}
    for (_, clean, values), feedback_id in zip(rows, ids, strict=True):
        prediction = predictions[clean.external_id]
        correction = values["correction"]
        key = values["idempotency_key"]
        if clean.segment:
            segment = json.dumps(values["segment"])
        else:
            segment = encoded_segments.get(prediction.pk)
            if segment is None:
                stored_text = prediction.__dict__.get("segment_json")
                if stored_text is None or not isinstance(prediction.segment, dict):
                    stored_text = json.dumps(values["segment"])
                segment = encoded_segments[prediction.pk] = stored_text
        values["id"] = feedback_id
        line = [
            values[name] for name in FEEDBACK_COPY_COLUMNS
        ]
        line[5] = _encoded_categories(tuple(values["categories"]))
        line[7] = None if correction is None else json.dumps(correction)
        line[9] = segment
        lines.append((key or "", line))  # sorted below: the order of unique-index locks
        feedback = stored_instance(Feedback, values, db)  # ``values`` is this row's own dict
        feedback._state.fields_cache["prediction"] = prediction
        stored.append(feedback)
    lines.sort(key=lambda pair: pair[0])
    with connection.wrap_database_errors, connection.cursor() as cursor:
        raw = cursor.cursor  # psycopg's own cursor: Django's wrapper has no copy()
        with raw.copy(
            f"COPY feedback_feedback ({', '.join(FEEDBACK_COPY_COLUMNS)}) FROM STDIN"
        ) as copy:
            for _, line in lines:
                copy.write_row(line)
    return stored
