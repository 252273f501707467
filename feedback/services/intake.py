"""Intake: logging predictions and submitting feedback, one item or a batch of them.

One code path serves the single and the batch endpoints: a single request is a batch of one.
Each call validates every item (refusals are kept per index), then stores the valid ones in one
transaction with a handful of statements whatever the batch size:

    SELECT the referenced predictions         (one query)
    SELECT earlier uses of idempotency keys   (one query, only when keys are given; the
                                              replayed rows are loaded only when some were used)
    INSERT new inline predictions             (one multi-row INSERT)
    INSERT feedback                           (one multi-row INSERT … RETURNING id; the
                                              categories are a column of the row)

Races are settled by the database's unique constraints, not by locks: when a concurrent request
inserts the same idempotency key or external_id first, the transaction rolls back and the
items are resolved again against what is now stored (a replay or a conflict), so two
simultaneous requests with one key create one row. Nothing here talks to the broker.

PostgreSQL has two faster write paths (the bench profile: per-statement round trips and ORM
compilation cost more than the rows themselves):

- one item referring to a logged prediction (the single endpoint's common case) is one
  statement in autocommit: a data-modifying CTE that resolves the prediction and inserts the
  feedback (``ON CONFLICT … DO NOTHING`` on the idempotency key). When it stores nothing (a key
  used before, an unknown prediction) the general path above answers.
- batches reserve their ids from the sequence and ``COPY`` the rows, in one transaction, in
  idempotency-key order (two batches sharing keys wait for each other instead of
  deadlocking). A unique violation rolls it all back and the items are resolved again.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache, lru_cache
from typing import Any

import psycopg
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connection, connections, transaction
from django.db.models.base import ModelState
from django.utils import timezone
from psycopg.pq import DiagnosticField, ExecStatus

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
FATAL_ERROR, TUPLES_OK, COMMAND_OK = (
    ExecStatus.FATAL_ERROR, ExecStatus.TUPLES_OK, ExecStatus.COMMAND_OK
)
SQLSTATE = DiagnosticField.SQLSTATE
# From this many rows a batch is written with COPY on PostgreSQL (below it, the two extra
# round trips of reserving ids and a second COPY cost more than multi-row INSERTs save).
COPY_MIN_ROWS = 8
CREATED, REPLAYED, INVALID, CONFLICT = 201, 200, 400, 409
# Plain strings (not the enum members): COPY and json take them as they are.
OPEN, DISPUTE = Feedback.DisputeStatus.OPEN.value, Feedback.Kind.DISPUTE.value


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

    if len(cleans) == 1 and connection.vendor == "postgresql":
        index, clean = cleans[0]
        if clean.prediction_ref is not None:
            stored = _store_one_postgres(context, clean)
            if stored is not None:
                results[index].obj = stored
                return results
            # Nothing stored: the key was used before or the prediction is unknown (or a race
            # lost): the general path below finds out which and answers.

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
        project_id, referenced | {p.external_id for _, p, _ in inline}, compared=bool(inline)
    )
    inline_outcome, to_create = _resolve_predictions(project_id, inline, stored_predictions, now)

    to_insert: list[tuple[int, CleanFeedback, dict[str, Any], Prediction]] = []
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
        values = _feedback_values(context, clean, prediction, now)
        to_insert.append((index, clean, values, prediction))

    # 3. Write everything in one transaction.
    with transaction.atomic():
        if to_create:
            Prediction.objects.bulk_create(to_create)
        if connection.vendor == "postgresql" and len(to_insert) >= COPY_MIN_ROWS:
            stored = _copy_feedback(to_insert)
        else:
            stored = [
                Feedback(prediction=prediction, **values) for _, _, values, prediction in to_insert
            ]
            Feedback.objects.bulk_create(stored)

    for (index, _, _, _), feedback in zip(to_insert, stored, strict=True):
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


def _key_conflict(key: str, prefix_items: bool, index: int) -> list[FieldError]:
    field_name = f"items[{index}].idempotency_key" if prefix_items else "Idempotency-Key"
    return _conflict(
        field_name, f"Idempotency key {key!r} was already used with a different body."
    )


def _feedback_values(
    context: KeyContext, clean: CleanFeedback, prediction: Prediction, now
) -> dict[str, Any]:
    """A new feedback row's fields (but its id and prediction)."""
    comment, correction, end_user = _scrubbed(context, clean)
    return {
        "project_id": context.project_id,
        "kind": clean.kind,
        "rating": clean.rating,
        "categories": clean.category_slugs,
        "comment": comment,
        "correction": correction,
        "end_user": end_user,
        "segment": {**(prediction.segment or {}), **clean.segment},
        "idempotency_key": clean.idempotency_key,
        "request_hash": clean.request_hash,
        "status": OPEN if clean.kind == DISPUTE else None,
        "created_at": now,
    }


# --- PostgreSQL write paths ------------------------------------------------------------------

# One statement, one round trip, no explicit transaction: resolve the prediction, insert the
# feedback (its categories on the row) unless its idempotency key is taken. The segment is the
# prediction's (when it is an object) updated with the feedback's own, as ``_feedback_values``
# merges it.
SINGLE_INSERT_SQL = b"""
WITH p AS (
    SELECT id, segment FROM feedback_prediction
    WHERE project_id = $1 AND external_id = $2
), f AS (
    INSERT INTO feedback_feedback (
        project_id, prediction_id, kind, rating, categories, comment, correction, end_user,
        segment, idempotency_key, request_hash, status, resolution_note, created_at
    )
    SELECT $1, p.id, $3, $4, $5::jsonb, $6, $7::jsonb, $8,
           CASE WHEN jsonb_typeof(p.segment) = 'object' THEN p.segment ELSE '{}'::jsonb END
               || $9::jsonb,
           $10, $11, $12, '', $13
    FROM p
    ON CONFLICT (project_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, prediction_id, segment
)
SELECT id, prediction_id, segment::text FROM f
"""


def _scrubbed(context: KeyContext, clean: CleanFeedback) -> tuple[str, Any, str]:
    """The comment, correction and end user as stored: PII scrubbed, the end user an HMAC."""
    comment, correction = clean.comment, clean.correction
    if context.scrub_pii:
        comment = scrub_text(comment)
        correction = scrub_value(correction)
    end_user = pseudonymise(context.project_secret, clean.end_user) if clean.end_user else ""
    return comment, correction, end_user


def _store_one_postgres(context: KeyContext, clean: CleanFeedback) -> Feedback | None:
    """Store one item referring to a logged prediction in one statement; None when nothing
    was stored (key used before, unknown prediction, or a lost race), for the general path to
    resolve."""
    now = timezone.now()
    comment, correction, end_user = _scrubbed(context, clean)
    status = OPEN if clean.kind == DISPUTE else None
    params = (  # SINGLE_INSERT_SQL's $1…$13
        context.project_id,
        clean.prediction_ref,
        clean.kind,
        clean.rating,
        _encoded_categories(tuple(clean.category_slugs)),
        comment,
        None if correction is None else json.dumps(correction),
        end_user,
        json.dumps(clean.segment) if clean.segment else "{}",
        clean.idempotency_key,
        clean.request_hash,
        status,
        now,
    )
    db = connections[DEFAULT_DB_ALIAS]  # once: each ``connection.x`` is a thread-local lookup
    # Inside a caller's transaction a failed statement must not poison it: a savepoint. Alone
    # (autocommit, as on the request path) the statement is its own transaction: no BEGIN and
    # COMMIT round trips.
    guard = transaction.atomic() if db.in_atomic_block else nullcontext()
    try:
        with guard, db.wrap_database_errors:
            # What ``db.cursor()`` does first; the statement then goes to libpq as a prepared
            # statement (_single_insert), where Django's cursors bind on the client and so
            # never reuse a plan. Planning the CTE cost PostgreSQL about as much as running it
            # (figures: docs/performance.md).
            db.close_if_health_check_failed()
            db.ensure_connection()
            row = _single_insert(db.connection, params)
    except (IntegrityError, StatementForgotten):
        # e.g. the prediction was deleted meanwhile, or a pooler dropped the prepared
        # statement (prepared again next time): the general path resolves and stores it
        return None
    if row is None:
        return None
    feedback_id, prediction_id, segment = row
    feedback = stored_instance(
        Feedback,
        {
            "id": feedback_id,
            "project_id": context.project_id,
            "prediction_id": prediction_id,
            "kind": clean.kind,
            "rating": clean.rating,
            "categories": clean.category_slugs,
            "comment": comment,
            "correction": correction,
            "end_user": end_user,
            "segment": json.loads(segment),
            "idempotency_key": clean.idempotency_key,
            "request_hash": clean.request_hash,
            "status": status,
            "resolution_note": "",
            "resolved_at": None,
            "resolved_by_id": None,
            "created_at": now,
        },
        db.alias,
    )
    # For rendering without a query.
    feedback.prediction_external_id = clean.prediction_ref
    return feedback


SINGLE_INSERT_NAME = b"redress_feedback_single_2"  # a new name whenever the SQL changes
_PREPARED = "_redress_single_prepared"  # set on a psycopg connection where it is prepared


class StatementForgotten(Exception):
    """The connection's server no longer has the prepared single-item INSERT."""


def _single_insert(conn: psycopg.Connection, params: tuple[Any, ...]) -> tuple | None:
    """Run SINGLE_INSERT_SQL through libpq directly; its one row, or None.

    psycopg's cursor (adapting 14 parameters, a generator per protocol step, loading the
    result) cost as much of the worker's CPU as the rest of the service call (bench profile).
    The parameters are few and simple (text, integers, JSON text, one aware datetime), so they
    are sent as text, and the statement is prepared once per connection under its own name.
    When the server no longer knows it (a pooler's DISCARD ALL) this raises StatementForgotten
    and the next call prepares it again (a failed statement may have aborted the caller's
    transaction: no second try here); with preparation
    turned off (settings: DJANGO_DB_PREPARE_THRESHOLD=-1, PgBouncer in transaction mode) each
    call sends the statement unnamed. Errors are psycopg's, for ``wrap_database_errors``."""
    pgconn = conn.pgconn
    values = [_pq_text(value) for value in params]
    with conn.lock:  # what psycopg's own execution holds
        if conn.prepare_threshold is None:
            result = pgconn.exec_params(SINGLE_INSERT_SQL, values)
        else:
            if not getattr(conn, _PREPARED, False):
                _prepare_single(conn)
            result = pgconn.exec_prepared(SINGLE_INSERT_NAME, values)
            if result.status == FATAL_ERROR and result.error_field(SQLSTATE) == b"26000":
                setattr(conn, _PREPARED, False)  # invalid_sql_statement_name: forgotten
                raise StatementForgotten
    if result.status != TUPLES_OK:
        raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
    if not result.ntuples:
        return None
    feedback_id, prediction_id, segment = (result.get_value(0, n) for n in range(3))
    return int(feedback_id), int(prediction_id), segment.decode()


def _pq_text(value: Any) -> bytes | None:
    """A parameter in PostgreSQL's text format (the connection's encoding is UTF-8)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, datetime):
        return value.isoformat().encode()  # aware: the offset is part of it
    return str(value).encode()  # int


def _prepare_single(conn: psycopg.Connection) -> None:
    result = conn.pgconn.prepare(SINGLE_INSERT_NAME, SINGLE_INSERT_SQL)
    if result.status != COMMAND_OK:
        raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
    setattr(conn, _PREPARED, True)


@lru_cache(maxsize=1024)
def _encoded_categories(slugs: tuple[str, ...]) -> str:
    """A category list as stored (JSON): a project repeats a few combinations (bench profile)."""
    return json.dumps(list(slugs))


FEEDBACK_COPY_COLUMNS = (
    "id", "project_id", "prediction_id", "kind", "rating", "categories", "comment", "correction",
    "end_user", "segment", "idempotency_key", "request_hash", "status", "resolution_note",
    "created_at",
)


@cache
def _feedback_id_sequence() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_serial_sequence('feedback_feedback', 'id')")
        return cursor.fetchone()[0]


def _copy_feedback(
    to_insert: list[tuple[int, CleanFeedback, dict[str, Any], Prediction]],
) -> list[Feedback]:
    """Write feedback rows with COPY (PostgreSQL, inside the caller's transaction); returns the
    stored feedback. Ids come from the table's sequence first: no RETURNING needed."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(%s) FROM generate_series(1, %s)",
            [_feedback_id_sequence(), len(to_insert)],
        )
        ids = [row[0] for row in cursor.fetchall()]
    stored: list[Feedback] = []
    rows = []
    db = connection.alias
    # Most items add nothing to their prediction's segment: its JSON is the text PostgreSQL
    # gave (_referenced_predictions), else encoded once per prediction (batch profile).
    encoded_segments: dict[int, str] = {}
    for (_, clean, values, prediction), feedback_id in zip(to_insert, ids, strict=True):
        correction = values["correction"]
        key = values["idempotency_key"]
        categories = _encoded_categories(tuple(clean.category_slugs))
        if clean.segment:
            segment = json.dumps(values["segment"])
        else:
            segment = encoded_segments.get(prediction.pk)
            if segment is None:
                stored_text = prediction.__dict__.get("segment_json")
                if stored_text is None or not isinstance(prediction.segment, dict):
                    stored_text = json.dumps(values["segment"])
                segment = encoded_segments[prediction.pk] = stored_text
        row = (
            feedback_id, values["project_id"], prediction.pk, values["kind"], values["rating"],
            categories, values["comment"],
            None if correction is None else json.dumps(correction),
            values["end_user"], segment, key, values["request_hash"],
            values["status"], "", values["created_at"],
        )
        rows.append((key or "", row))  # sorted below: the order of unique-index locks
        # ``values`` is this row's own dict (``_feedback_values``): completed in place.
        values.update(
            id=feedback_id,
            prediction_id=prediction.pk,
            resolution_note="",
            resolved_at=None,
            resolved_by_id=None,
        )
        feedback = stored_instance(Feedback, values, db)
        feedback._state.fields_cache["prediction"] = prediction
        stored.append(feedback)
    rows.sort(key=lambda pair: pair[0])
    with connection.wrap_database_errors, connection.cursor() as cursor:
        raw = cursor.cursor  # psycopg's own cursor: Django's wrapper has no copy()
        with raw.copy(
            f"COPY feedback_feedback ({', '.join(FEEDBACK_COPY_COLUMNS)}) FROM STDIN"
        ) as copy:
            for _, row in rows:
                copy.write_row(row)
    return stored
