"""The row format of an export, in one place: its columns and their types, and the two
statements that produce its rows.

- The columns (``EXPORT_COLUMNS``, ``GOLD_COLUMNS``) with their kind: "string", "json" (any
  JSON value, canonical JSON text in CSV and Parquet), "list" (list of strings: a typed
  list<string> in Parquet), "float", "int". ``ARROW_TYPES`` maps a kind to its Parquet type and
  ``arrow_schema`` builds the schema: to change a Parquet column type, change it here.
- ``export_rows_portable``: the rows through the ORM, keyset-paginated by item id in chunks
  (any database, SQLite included); feedback categories, corrections and labels come in one extra
  query per chunk.
- ``export_copy_sql``: one PostgreSQL SELECT for ``COPY (…) TO STDOUT`` (or for the Arrow
  reader), which renders each JSON line (or CSV record, or typed Arrow column) in the database,
  split included, so a million rows never become Python objects; ``arrow_converter`` brings the
  batches it gives to the Parquet schema.

Both order rows by prediction id, then queue item id (on SQLite as on PostgreSQL): a stable
key, so the same request over the same data gives the same bytes on every path
(``tests/labeling/test_exports.py`` compares them).

JSON text, nested or not, has one style on every path: PostgreSQL's jsonb text (``", "`` and
``": "`` separators, object keys shorter first then by bytes, non-ASCII as is); the Python
writers render it the same way (``writers.canonical``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from django.db.models import F, Q, QuerySet, Value

from feedback.models import Feedback, Prediction, Project

from ..models import Label, QueueItem
from ..selectors.exports import as_datetime, export_items
from ..splits import (
    GroupUniform,
    SplitSpec,
    group_key_expression,
    split_expression,
    sql_group_uniform,
    sql_split_case,
)

# --- columns ---------------------------------------------------------------------------------

# Column kinds: "string", "json" (any JSON value, stored as canonical JSON text in CSV and
# Parquet), "list" (list of strings: typed list<string> in Parquet), "float", "int".
Columns = Sequence[tuple[str, str, bool]]  # (name, kind, nullable)

EXPORT_COLUMNS: Columns = (
    ("external_id", "string", False),
    ("model", "string", False),
    ("model_version", "string", False),
    ("input", "json", True),
    ("output", "json", True),
    ("predicted_label", "string", True),
    ("confidence", "float", True),
    ("segment", "json", False),
    ("feedback_categories", "list", False),
    ("verdict", "string", True),
    ("true_label", "string", True),
    ("label_categories", "list", False),
    ("correction", "json", True),
    ("agreement", "float", True),
    ("n_labels", "int", False),
    ("weight", "float", False),
    ("split", "string", False),
    # Where the row comes from and how it was drawn: weight = 1 / inclusion_probability.
    ("queue_id", "bigint", False),
    ("item_id", "bigint", False),
    ("stratum", "string", False),
    ("inclusion_probability", "float", False),
    # When: the prediction, the first end-user feedback on it (null: none), the consensus.
    ("occurred_at", "timestamp", False),
    ("first_feedback_at", "timestamp", True),
    ("completed_at", "timestamp", True),
)
# The columns after ``segment`` holding one segment key each (``segment.locale``).
SEGMENT_COLUMNS_AFTER = "segment"
LABELS_COLUMN = ("labels", "json", False)
# End users' feedback comments on the prediction (scrubbed at intake), by feedback id.
COMMENTS_COLUMN = ("feedback_comments", "list", False)
TIMESTAMP_KINDS = frozenset({"timestamp"})

GOLD_COLUMNS: Columns = (
    ("key", "string", False),
    ("input", "json", True),
    ("output", "json", True),
    ("expected_verdict", "string", True),
    ("expected_label", "string", True),
    ("expected_categories", "list", False),
    ("segment", "json", False),
    ("source_external_id", "string", True),
    ("source_model_version", "string", True),
    ("source_agreement", "float", True),
    ("source_agreeing_labels", "int", True),
)

ARROW_TYPES = {
    "string": pa.string(),
    "json": pa.string(),
    "list": pa.list_(pa.string()),
    "float": pa.float64(),
    "int": pa.int32(),
    "bigint": pa.int64(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}


def export_columns(
    *,
    include_labels: bool,
    segment_keys: Sequence[str] = (),
    include_comments: bool = False,
) -> list[tuple[str, str, bool]]:
    """The columns of an export, in file order: ``segment.<key>`` columns right after
    ``segment`` (sorted keys), then ``labels`` and ``feedback_comments`` when asked."""
    columns: list[tuple[str, str, bool]] = []
    for column in EXPORT_COLUMNS:
        columns.append(column)
        if column[0] == SEGMENT_COLUMNS_AFTER:
            columns += [(f"segment.{key}", "string", True) for key in segment_keys]
    if include_labels:
        columns.append(LABELS_COLUMN)
    if include_comments:
        columns.append(COMMENTS_COLUMN)
    return columns


def arrow_schema(columns: Columns, metadata: dict | None = None) -> pa.Schema:
    """The typed Parquet schema; JSON columns say so in their field metadata."""
    fields = []
    for name, kind, nullable in columns:
        field_metadata = {"redress.kind": "json"} if kind == "json" else None
        fields.append(pa.field(name, ARROW_TYPES[kind], nullable=nullable, metadata=field_metadata))
    return pa.schema(fields, metadata=metadata)


def iso_timestamp(value: dt.datetime | None) -> str | None:
    """A timestamp as the export writes it in JSON lines and CSV: UTC, ``+00:00``, the
    fraction of a second without trailing zeros, as PostgreSQL's ``to_json`` renders a
    timestamptz in a UTC session (the COPY paths), so both paths give the same bytes."""
    if value is None:
        return None
    value = value.astimezone(dt.UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "+00:00"


# --- what an export reads ----------------------------------------------------------------------


@dataclass(frozen=True)
class ExportPlan:
    """Everything a build needs to read rows, resolved once from the export's spec."""

    project: Project
    queue_id: int | None
    filter: dict
    include_labels: bool
    split: SplitSpec
    # Group keys that leave train (empty when gold may stay in train).
    gold_groups: list[str] = field(default_factory=list)
    include_comments: bool = False
    # One ``segment.<key>`` column each, sorted (see ``segment_keys_of``).
    segment_keys: tuple[str, ...] = ()

    def items(self) -> QuerySet[QueueItem]:
        return export_items(project=self.project, queue=self.queue_id, filter=self.filter)

    def columns(self) -> list[tuple[str, str, bool]]:
        return export_columns(
            include_labels=self.include_labels,
            segment_keys=self.segment_keys,
            include_comments=self.include_comments,
        )


def segment_keys_of(*, project: Project, filter: dict) -> tuple[str, ...]:
    """The export's ``segment.<key>`` columns when the request does not name them: the segment
    keys of the project's predictions (of the filter's model version), sorted.

    The project's predictions rather than the exported rows: one scan of a table instead of the
    rows' joins (0.65 s against 2.3 s for a million rows), and both paths agree on it. A key
    that no exported row has is an all-null column.
    """
    from django.db import connection

    predictions = Prediction.objects.filter(project=project)
    if filter.get("model_version") is not None:
        predictions = predictions.filter(model_version=filter["model_version"])
    if connection.vendor == "postgresql":
        sql, params = predictions.order_by().values("segment").query.sql_with_params()
        with connection.cursor() as cursor:
            # Distinct segments first (a few hundred), then their keys.
            cursor.execute(
                f"SELECT DISTINCT k FROM (SELECT DISTINCT x.segment FROM ({sql}) x(segment)) d, "
                "jsonb_object_keys(d.segment) k ORDER BY k",
                params,
            )
            return tuple(row[0] for row in cursor.fetchall())
    keys: set[str] = set()
    for segment in predictions.order_by().values_list("segment", flat=True).distinct():
        keys.update((segment or {}).keys())
    return tuple(sorted(keys))


def _with_split(items: QuerySet[QueueItem], plan: ExportPlan) -> QuerySet[QueueItem]:
    if plan.split.by == "time":
        return items.annotate(split_key=F("prediction__external_id")).annotate(
            split=split_expression(plan.split, gold_groups=plan.gold_groups)
        )
    return (
        items.annotate(
            split_key=group_key_expression(plan.split),
        )
        .annotate(
            split_u=GroupUniform(Value(plan.split.seed), "split_key"),
        )
        .annotate(split=split_expression(plan.split, gold_groups=plan.gold_groups))
    )


# --- portable rows (ORM) ---------------------------------------------------------------------

ROW_FIELDS = (
    "pk",
    "queue_id",
    "stratum",
    "completed_at",
    "inclusion_probability",
    "consensus",
    "labels_count",
    "prediction_id",
    "prediction__external_id",
    "prediction__model",
    "prediction__model_version",
    "prediction__input",
    "prediction__output",
    "prediction__label",
    "prediction__confidence",
    "prediction__segment",
    "prediction__occurred_at",
    "split",
)


def export_rows_portable(*, plan: ExportPlan, chunk_size: int = 2000) -> Iterator[list[dict]]:
    """Rows in chunks, by prediction id then item id (as on PostgreSQL), keyset-paginated: no
    cursor stays open between chunks."""
    items = _with_split(plan.items(), plan).order_by("prediction_id", "pk")
    last: tuple[int, int] | None = None
    while True:
        page = items
        if last is not None:
            page = items.filter(
                Q(prediction_id__gt=last[0]) | Q(prediction_id=last[0], pk__gt=last[1])
            )
        chunk = list(page.values(*ROW_FIELDS)[:chunk_size])
        if not chunk:
            return
        last = (chunk[-1]["prediction_id"], chunk[-1]["pk"])
        yield _rows_of(chunk, plan)


def _rows_of(chunk: list[dict], plan: ExportPlan) -> list[dict]:
    item_ids = [r["pk"] for r in chunk]
    categories: dict[int, set[str]] = defaultdict(set)
    first_feedback: dict[int, Any] = {}
    comments: dict[int, list[str]] = defaultdict(list)
    for prediction_id, slugs, created_at, comment in (
        Feedback.objects.filter(
            project=plan.project, prediction_id__in={r["prediction_id"] for r in chunk}
        )
        .order_by("id")
        .values_list("prediction_id", "categories", "created_at", "comment")
    ):
        categories[prediction_id].update(slugs or ())
        if prediction_id not in first_feedback or created_at < first_feedback[prediction_id]:
            first_feedback[prediction_id] = created_at
        if comment:
            comments[prediction_id].append(comment)
    labels: dict[int, list[Label]] = defaultdict(list)
    for label in Label.objects.filter(item_id__in=item_ids).order_by("id"):
        labels[label.item_id].append(label)
    rows = []
    for r in chunk:
        consensus = r["consensus"] or {}
        item_labels = labels.get(r["pk"], [])
        segment = r["prediction__segment"] or {}
        row = {
            "external_id": r["prediction__external_id"],
            "model": r["prediction__model"],
            "model_version": r["prediction__model_version"],
            "input": r["prediction__input"],
            "output": r["prediction__output"],
            "predicted_label": r["prediction__label"],
            "confidence": r["prediction__confidence"],
            "segment": segment,
            "feedback_categories": sorted(categories.get(r["prediction_id"], ())),
            "verdict": consensus.get("verdict"),
            "true_label": consensus.get("true_label"),
            "label_categories": list(consensus.get("categories") or []),
            "correction": correction_of(item_labels, consensus.get("verdict")),
            "agreement": consensus.get("agreement"),
            "n_labels": consensus.get("n_labels", r["labels_count"]),
            "weight": 1.0 / r["inclusion_probability"],
            "split": r["split"],
            "queue_id": r["queue_id"],
            "item_id": r["pk"],
            "stratum": r["stratum"],
            "inclusion_probability": r["inclusion_probability"],
            "occurred_at": r["prediction__occurred_at"],
            "first_feedback_at": first_feedback.get(r["prediction_id"]),
            "completed_at": r["completed_at"],
        }
        for key in plan.segment_keys:
            row[f"segment.{key}"] = segment.get(key)
        if plan.include_labels:
            row["labels"] = [label_entry(label) for label in item_labels]
        if plan.include_comments:
            row["feedback_comments"] = comments.get(r["prediction_id"], [])
        rows.append(row)
    return rows


def correction_of(labels: list[Label], verdict: str | None) -> Any:
    """The first correction (by label id) from a reviewer who gave the consensus verdict."""
    for label in labels:
        if label.verdict == verdict and label.correction is not None:
            return label.correction
    return None


def label_entry(label: Label) -> dict:
    # Reviewers appear by id, not name: an export file travels further than the admin.
    return {
        "reviewer": label.reviewer_id,
        "verdict": label.verdict,
        "categories": list(label.categories or []),
        "true_label": label.true_label or None,
        "correction": label.correction,
        "seconds_spent": label.seconds_spent,
    }


# --- PostgreSQL: one statement for COPY ------------------------------------------------------


def _where(plan: ExportPlan, params: dict[str, Any]) -> str:
    clauses = [
        "q.project_id = %(project)s",
        "qi.status = 'complete'",
        "qi.gold_item_id IS NULL",
        "qi.prediction_id IS NOT NULL",
    ]
    params["project"] = plan.project.pk
    if plan.queue_id is not None:
        clauses.append("qi.queue_id = %(queue)s")
        params["queue"] = plan.queue_id
    spec = plan.filter
    if spec.get("model_version") is not None:
        clauses.append("p.model_version = %(model_version)s")
        params["model_version"] = spec["model_version"]
    if spec.get("completed_after") is not None:
        clauses.append("qi.completed_at >= %(completed_after)s")
        params["completed_after"] = as_datetime(spec["completed_after"])
    if spec.get("completed_before") is not None:
        clauses.append("qi.completed_at < %(completed_before)s")
        params["completed_before"] = as_datetime(spec["completed_before"])
    for position, (key, value) in enumerate(sorted((spec.get("segment") or {}).items())):
        clauses.append(f"p.segment ->> %(seg_key_{position})s = %(seg_value_{position})s")
        params[f"seg_key_{position}"], params[f"seg_value_{position}"] = key, value
    return " AND ".join(clauses)


def _split_sql(plan: ExportPlan, params: dict[str, Any]) -> str:
    if plan.split.by == "time":
        return _time_split_sql(plan, params)
    name = plan.split.segment_key
    if name is None:
        key_sql = "p.external_id"
    else:
        key_sql = "coalesce(p.segment ->> %(split_segment_key)s, '')"
        params["split_segment_key"] = name
    params["split_seed"] = plan.split.seed
    u_sql = sql_group_uniform("%(split_seed)s::bigint", key_sql)
    gold_sql = None
    if plan.gold_groups:
        # A hashed subplan: one probe per row, whatever the number of gold groups.
        gold_sql = f"{key_sql} IN (SELECT unnest(%(gold_groups)s::text[]))"
        params["gold_groups"] = list(plan.gold_groups)
    return sql_split_case(plan.split, u_sql=u_sql, gold_sql=gold_sql)


def _time_split_sql(plan: ExportPlan, params: dict[str, Any]) -> str:
    """By the prediction's ``occurred_at`` against the two cut-offs (see ``splits``)."""
    params["split_validation_from"] = as_datetime(plan.split.validation_from)
    params["split_test_from"] = as_datetime(plan.split.test_from)
    plain = (
        "(CASE WHEN p.occurred_at < %(split_validation_from)s THEN 'train' "
        "WHEN p.occurred_at < %(split_test_from)s THEN 'validation' ELSE 'test' END)"
    )
    if not plan.gold_groups:
        return plain
    params["gold_groups"] = list(plan.gold_groups)
    return (
        "(CASE WHEN p.occurred_at < %(split_validation_from)s "
        "AND p.external_id IN (SELECT unnest(%(gold_groups)s::text[])) "
        f"THEN '{plan.split.time_gold_split}' ELSE {plain} END)"
    )


_FROM_ITEMS = """
    FROM labeling_queueitem qi
    JOIN labeling_queue q ON q.id = qi.queue_id
"""
_JOIN_PREDICTIONS = """
    JOIN feedback_prediction p ON p.id = qi.prediction_id
"""
_FROM = _FROM_ITEMS + _JOIN_PREDICTIONS

_JOINS = """
    LEFT JOIN (
        SELECT f.prediction_id, array_agg(DISTINCT c.slug ORDER BY c.slug) AS slugs
        FROM feedback_feedback f
        CROSS JOIN LATERAL jsonb_array_elements_text(f.categories) AS c(slug)
        WHERE f.project_id = %(project)s AND f.categories <> '[]'::jsonb{range}
        GROUP BY f.prediction_id
    ) fb ON fb.prediction_id = qi.prediction_id
"""

# The first feedback's time (and, when asked, the comments) per prediction with any feedback:
# one hashed aggregate over the project's feedback, probed per row.
_FIRST_FEEDBACK_JOIN = """
    LEFT JOIN (
        SELECT f.prediction_id, min(f.created_at) AS first_at{comments}
        FROM feedback_feedback f
        WHERE f.project_id = %(project)s{range}
        GROUP BY f.prediction_id
    ) ff ON ff.prediction_id = qi.prediction_id
"""
_COMMENTS_AGGREGATE = (
    ", array_agg(f.comment ORDER BY f.id) FILTER (WHERE f.comment <> '') AS comments"
)

# The reviewer's correction. Most items have none: a hashed set of the project's items holding
# any correction (built once, probed per row) guards the per-item lookup, which then runs for
# those few items only. A LATERAL probe for every item (index lookup and a sort per item) cost
# ~2-4 s of CPU per million rows; a hash join instead loses the row order (a sort of every
# item) and, its row count being hard to estimate, risks a nested loop.
_CORRECTION = """
    CASE WHEN qi.id IN (
            SELECT cl.item_id FROM labeling_label cl
            JOIN labeling_queueitem ci ON ci.id = cl.item_id
            JOIN labeling_queue cq ON cq.id = ci.queue_id
            WHERE cq.project_id = %(project)s
              AND cl.correction IS NOT NULL AND cl.correction <> 'null'::jsonb)
        THEN (SELECT l.correction FROM labeling_label l
              WHERE l.item_id = qi.id AND l.correction IS NOT NULL
                AND l.correction <> 'null'::jsonb AND l.verdict = qi.consensus ->> 'verdict'
              ORDER BY l.id
              LIMIT 1)
    END
"""

_LABELS_JOIN = """
    LEFT JOIN LATERAL (
        SELECT jsonb_agg(jsonb_build_object(
                   'reviewer', l.reviewer_id, 'verdict', l.verdict, 'categories', l.categories,
                   'true_label', nullif(l.true_label, ''), 'correction', l.correction,
                   'seconds_spent', l.seconds_spent) ORDER BY l.id) AS labels
        FROM labeling_label l
        WHERE l.item_id = qi.id
    ) lb ON true
"""


ORDER_SQL = "qi.prediction_id, qi.id"
# One byte per record telling its split (first byte of each COPY record, see export_copy_sql).
SPLIT_CODES = {ord("t"): "train", ord("v"): "validation", ord("s"): "test"}


def export_copy_sql(
    *,
    plan: ExportPlan,
    mode: str,
    id_range: tuple[int, int] | None = None,
    arrow_reader: bool = False,
) -> tuple[str, dict[str, Any]]:
    """A SELECT for ``COPY (…) TO STDOUT`` and its parameters.

    ``mode``: ``jsonl`` (one text column: a split code, then the whole JSON line, keys in the
    fixed column order), ``csv`` (a split-code column, then the typed columns, lists and JSON
    values as JSON text) or ``arrow`` (the columns alone, lists as comma-joined slugs for the
    Parquet builder to split). The split code (``t``/``v``/``s``) lets the writer count rows
    per split while it streams, instead of a second pass over the data.

    The inner query joins and orders narrow references (``OFFSET 0`` keeps PostgreSQL from
    flattening it, so the split's md5 runs once per row); the outer one only renders. Rows
    come by prediction id, then item id: a stable key whose order the joins on prediction id
    can keep, so no sort of rendered rows is needed. ``id_range`` (inclusive prediction ids)
    selects one stream's share of a parallel export.

    ``arrow_reader``: the rows are read as Arrow columns (``pg_arrow``), not COPY text.
    ``jsonl`` then gives two columns, the split code and the line (with its newline), so the
    lines are one contiguous buffer the writer copies as is; ``arrow`` gives feedback categories
    as a text array (an Arrow list) instead of joined slugs.
    """
    params: dict[str, Any] = {}
    where = _where(plan, params)
    if id_range is not None:
        where += " AND qi.prediction_id BETWEEN %(range_low)s AND %(range_high)s"
        params["range_low"], params["range_high"] = id_range
    split = _split_sql(plan, params)
    # Feedback categories are rendered once per prediction that has any (a few percent), in
    # the aggregate, rather than once per row.
    if mode == "arrow" and arrow_reader:
        slugs = "fb.slugs::text[] AS slugs"
    elif mode == "arrow":
        slugs = "array_to_string(fb.slugs, ',') AS slugs"
    else:
        slugs = "to_jsonb(fb.slugs)::text AS slugs"
    labels_join, labels_column = "", ""
    if plan.include_labels:
        labels_join, labels_column = _LABELS_JOIN, ", lb.labels"
    # A stream aggregates the feedback of its own range of predictions only.
    feedback_range = (
        " AND f.prediction_id BETWEEN %(range_low)s AND %(range_high)s" if id_range else ""
    )
    joins = _JOINS.format(range=feedback_range)
    first_join = _FIRST_FEEDBACK_JOIN.format(
        comments=_COMMENTS_AGGREGATE if plan.include_comments else "", range=feedback_range
    )
    comments_column = ", ff.comments" if plan.include_comments else ""
    inner = f"""
        SELECT qi.id AS item_id, qi.prediction_id, qi.inclusion_probability AS pi,
               qi.consensus, qi.labels_count, qi.queue_id, qi.stratum, qi.completed_at,
               p.external_id, p.model, p.model_version, p.occurred_at,
               p.input, p.output, p.label, p.confidence, p.segment, {slugs},
               ff.first_at, {_CORRECTION} AS correction{labels_column}{comments_column},
               {split} AS split
        {_FROM} {joins} {first_join} {labels_join}
        WHERE {where}
        ORDER BY {ORDER_SQL}
        OFFSET 0
    """
    segment_keys = {}
    for n, key in enumerate(plan.segment_keys):
        params[f"segment_column_{n}"] = key
        segment_keys[f"segment.{key}"] = f"%(segment_column_{n})s"
    feedback_list = "coalesce(x.slugs, '[]')"
    label_list = "coalesce(x.consensus -> 'categories', '[]'::jsonb)::text"
    n_labels = "coalesce((x.consensus ->> 'n_labels')::int, x.labels_count)"
    code = "(CASE x.split WHEN 'train' THEN 't' WHEN 'validation' THEN 'v' ELSE 's' END)"
    if mode == "jsonl":
        pieces = [
            ("external_id", "to_json(x.external_id)::text"),
            ("model", "to_json(x.model)::text"),
            ("model_version", "to_json(x.model_version)::text"),
            ("input", "coalesce(x.input::text, 'null')"),
            ("output", "coalesce(x.output::text, 'null')"),
            ("predicted_label", "coalesce(to_json(x.label)::text, 'null')"),
            # Numbers as float8 text: the shortest exact form, as to_json gives for finite
            # values (confidence is checked to lie in [0, 1], π in (0, 1]), without its cost.
            ("confidence", "coalesce(x.confidence::text, 'null')"),
            ("segment", "x.segment::text"),
            *(
                (name, f"coalesce((x.segment -> {param})::text, 'null')")
                for name, param in segment_keys.items()
            ),
            ("feedback_categories", feedback_list),
            ("verdict", "coalesce((x.consensus -> 'verdict')::text, 'null')"),
            ("true_label", "coalesce((x.consensus -> 'true_label')::text, 'null')"),
            ("label_categories", label_list),
            ("correction", "coalesce(x.correction::text, 'null')"),
            # As float8 text, like the other numbers (1, not the 1.0 the consensus may hold).
            ("agreement", "coalesce(((x.consensus ->> 'agreement')::float8)::text, 'null')"),
            ("n_labels", f"{n_labels}::text"),
            ("weight", "(1.0::float8 / x.pi)::text"),
            ("split", "'\"' || x.split || '\"'"),
            ("queue_id", "x.queue_id::text"),
            ("item_id", "x.item_id::text"),
            ("stratum", "to_json(x.stratum)::text"),
            ("inclusion_probability", "x.pi::text"),
            # to_json renders a timestamptz in the session's time zone: UTC (see the engine).
            ("occurred_at", "to_json(x.occurred_at)::text"),
            ("first_feedback_at", "coalesce(to_json(x.first_at)::text, 'null')"),
            ("completed_at", "coalesce(to_json(x.completed_at)::text, 'null')"),
        ]
        if plan.include_labels:
            pieces.append(("labels", "coalesce(x.labels, '[]'::jsonb)::text"))
        if plan.include_comments:
            pieces.append(("feedback_comments", "coalesce(to_jsonb(x.comments)::text, '[]')"))
        # One concat() call, not json_build_object (no per-row JSON value) nor a chain of ||
        # (each copies the whole line so far: quadratic in its length). Separators ", " and
        # ": " as PostgreSQL writes the nested jsonb values: one JSON style in the line.
        parts = [] if arrow_reader else [code]
        for n, (name, expression) in enumerate(pieces):
            parts += [f"'{'{' if n == 0 else ', '}\"{name}\": '", expression]
        if arrow_reader:
            select = f"SELECT {code} AS code, concat({', '.join(parts)}, E'}}\\n') AS line"
        else:
            select = f"SELECT concat({', '.join(parts)}, '}}')"
    else:
        comments = "coalesce(to_jsonb(x.comments)::text, '[]')"
        timestamp = "btrim(to_json({})::text, '\"')"
        if mode == "arrow":
            # Category slugs are letters, digits, '_' and '-' (validated at intake and labeling),
            # so a comma joins them unambiguously and pyarrow splits them back into lists.
            feedback_list = (
                "coalesce(x.slugs, '{}'::text[])" if arrow_reader else "coalesce(x.slugs, '')"
            )
            label_list = "translate(coalesce(x.consensus -> 'categories', '[]')::text, '[]\" ', '')"
            if arrow_reader:
                comments = "coalesce(x.comments, '{}'::text[])"
                timestamp = "{}"
            # else: comments as JSON text, decoded by ``arrow_converter`` (JSON_LIST_COLUMNS).
        columns = {
            "external_id": "x.external_id",
            "model": "x.model",
            "model_version": "x.model_version",
            "input": "x.input::text",
            "output": "x.output::text",
            "predicted_label": "x.label",
            "confidence": "x.confidence",
            "segment": "x.segment::text",
            **{name: f"x.segment ->> {param}" for name, param in segment_keys.items()},
            "feedback_categories": feedback_list,
            "verdict": "x.consensus ->> 'verdict'",
            "true_label": "x.consensus ->> 'true_label'",
            "label_categories": label_list,
            "correction": "x.correction::text",
            "agreement": "(x.consensus ->> 'agreement')::float8",
            "n_labels": n_labels,
            "weight": "1.0::float8 / x.pi",
            "split": "x.split",
            "queue_id": "x.queue_id",
            "item_id": "x.item_id",
            "stratum": "x.stratum",
            "inclusion_probability": "x.pi",
            "occurred_at": timestamp.format("x.occurred_at"),
            "first_feedback_at": timestamp.format("x.first_at"),
            "completed_at": timestamp.format("x.completed_at"),
            "labels": "coalesce(x.labels, '[]'::jsonb)::text",
            "feedback_comments": comments,
        }
        # Aliases name the CSV header.
        rendered = [f'{columns[name]} AS "{name}"' for name, _, _ in plan.columns()]
        if mode == "csv":
            rendered.insert(0, f'{code} AS "_"')
        select = "SELECT " + ", ".join(rendered)
    sql = f"{select} FROM ({inner}) x ORDER BY x.prediction_id, x.item_id"
    return sql, params


def export_count_sql(*, plan: ExportPlan) -> tuple[str, dict[str, Any]]:
    """How many rows the export holds (for progress; the splits are counted as rows stream),
    and the range of their prediction ids (to share the work between streams)."""
    params: dict[str, Any] = {}
    where = _where(plan, params)
    # The join with predictions only when a filter needs it: the count comes before any row
    # streams, and joining a million predictions for it took 1.1 s of the build (0.27 s without).
    tables = _FROM if "p." in where else _FROM_ITEMS
    return (
        f"SELECT count(*), min(qi.prediction_id), max(qi.prediction_id) {tables} WHERE {where}",
        params,
    )


# List columns that arrive as JSON text on the COPY CSV path (not comma-joined slugs).
JSON_LIST_COLUMNS = frozenset({"feedback_comments"})

# Split of a row from the code a COPY record or an Arrow code column starts with.
SPLIT_OF_CODE = {chr(code): name for code, name in SPLIT_CODES.items()}


def arrow_converter(columns: Columns, schema: pa.Schema, pool: pa.MemoryPool):
    """A function turning one batch as read (Arrow reader, or COPY CSV parsed by pyarrow) into
    a batch of the Parquet ``schema``, and the batch's split column (to count rows per split).
    List columns that arrive as comma-joined slugs (see ``export_copy_sql``) are split; the
    others are cast if needed."""
    names = [name for name, _, _ in columns]
    empty_list = pa.scalar([], type=pa.list_(pa.string()))

    def convert(batch: pa.RecordBatch) -> pa.RecordBatch:
        arrays = []
        for name, target in zip(names, schema, strict=True):
            column = batch.column(name)
            if name in JSON_LIST_COLUMNS and pa.types.is_string(column.type):
                # Free text (comments hold commas): JSON text, decoded here. Only on the COPY
                # CSV path, and only when comments were asked for.
                column = pa.array(
                    [json.loads(value) for value in column.to_pylist()], type=target.type
                )
            elif pa.types.is_list(target.type) and pa.types.is_string(column.type):
                split = pc.split_pattern(column, ",", memory_pool=pool)
                empty = pc.equal(column, "", memory_pool=pool)
                column = pc.if_else(empty, empty_list, split, memory_pool=pool)
            if column.type != target.type:
                column = column.cast(target.type, memory_pool=pool)
            arrays.append(column)
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    return convert


__all__ = [
    "ARROW_TYPES",
    "EXPORT_COLUMNS",
    "GOLD_COLUMNS",
    "SPLIT_CODES",
    "SPLIT_OF_CODE",
    "Columns",
    "ExportPlan",
    "arrow_converter",
    "arrow_schema",
    "export_columns",
    "export_copy_sql",
    "export_count_sql",
    "export_rows_portable",
    "iso_timestamp",
    "segment_keys_of",
]
