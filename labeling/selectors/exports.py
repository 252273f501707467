"""Read queries for exports: which items an export holds, its rows, and who may see it.

Two ways to read the rows, with the same content:

- ``export_rows_portable``: the ORM, keyset-paginated by item id in chunks (any database);
  feedback categories, corrections and labels come in one extra query per chunk.
- ``export_copy_sql``: one PostgreSQL statement for ``COPY (…) TO STDOUT``, which builds each
  JSON line (or CSV record) in the database, split included, so a million rows never become
  Python objects.

Both order rows by queue item id: a stable key, so the same request over the same data gives the
same bytes.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet, Value
from django.utils.dateparse import parse_datetime

from feedback.models import Feedback, Project
from feedback.selectors import projects_for_user

from ..models import Export, GoldItem, GoldSetVersion, Label, QueueItem
from ..splits import (
    GroupUniform,
    SplitSpec,
    group_key_expression,
    group_key_of,
    split_expression,
    sql_group_uniform,
    sql_split_case,
)
from ..writers import export_columns
from .queues import READ_ROLES


def _as_datetime(value: Any) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return value
    return parse_datetime(str(value))


def export_items(
    *, project: Project, queue: Any = None, filter: dict | None = None
) -> QuerySet[QueueItem]:
    """The completed production items an export with this filter would contain.

    Hidden gold checks (items with ``gold_item``) are never part of an export. ``filter`` takes
    ``model_version``, ``completed_after`` (inclusive), ``completed_before`` (exclusive) as
    datetimes or ISO strings, and ``segment`` (``{key: value}``, all must match). ``queue`` is a
    Queue, a queue id, or None for every queue of the project.
    """
    spec = filter or {}
    items = QueueItem.objects.filter(
        queue__project=project,
        status=QueueItem.Status.COMPLETE,
        gold_item__isnull=True,
        prediction__isnull=False,
    )
    if queue is not None:
        items = items.filter(queue=queue)
    if spec.get("model_version") is not None:
        items = items.filter(prediction__model_version=spec["model_version"])
    if spec.get("completed_after") is not None:
        items = items.filter(completed_at__gte=_as_datetime(spec["completed_after"]))
    if spec.get("completed_before") is not None:
        items = items.filter(completed_at__lt=_as_datetime(spec["completed_before"]))
    for key, value in sorted((spec.get("segment") or {}).items()):
        # Per-key equality rather than JSON containment: SQLite has no ``contains`` on JSON.
        items = items.filter(**{f"prediction__segment__{key}": value})
    return items.select_related("prediction", "queue")


def gold_source_predictions(*, project: Project) -> QuerySet[GoldItem]:
    """Items of the project's published gold-set versions that came from a prediction."""
    return GoldItem.objects.filter(
        version__gold_set__project=project,
        version__status=GoldSetVersion.Status.PUBLISHED,
        source_prediction_id__isnull=False,
    )


def gold_group_keys(*, project: Project, spec: SplitSpec) -> list[str]:
    """Group keys (under ``spec.key``) of the predictions behind published gold items.

    Gold sets are small (hundreds to thousands of items), so the keys travel as a list.
    """
    from feedback.models import Prediction

    predictions = Prediction.objects.filter(
        pk__in=gold_source_predictions(project=project).values("source_prediction_id")
    ).values_list("external_id", "segment")
    keys = {
        group_key_of(spec, external_id=external_id, segment=segment)
        for external_id, segment in predictions
    }
    return sorted(keys)


def gold_versions_touched(*, items: QuerySet[QueueItem], project: Project) -> list[dict]:
    """Published gold-set versions holding an item whose source prediction is in ``items``."""
    versions = (
        gold_source_predictions(project=project)
        .filter(source_prediction_id__in=items.values("prediction_id"))
        .values_list("version__gold_set__slug", "version__number", "version__checksum")
        .distinct()
        .order_by("version__gold_set__slug", "version__number")
    )
    return [
        {"gold_set": slug, "version": number, "checksum": checksum}
        for slug, number, checksum in versions
    ]


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

    def items(self) -> QuerySet[QueueItem]:
        return export_items(project=self.project, queue=self.queue_id, filter=self.filter)


def _with_split(items: QuerySet[QueueItem], plan: ExportPlan) -> QuerySet[QueueItem]:
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
    "split",
)


def export_rows_portable(*, plan: ExportPlan, chunk_size: int = 2000) -> Iterator[list[dict]]:
    """Rows in chunks, by item id (keyset pagination: no cursor stays open between chunks)."""
    items = _with_split(plan.items(), plan).order_by("pk")
    last = 0
    while True:
        chunk = list(items.filter(pk__gt=last).values(*ROW_FIELDS)[:chunk_size])
        if not chunk:
            return
        last = chunk[-1]["pk"]
        yield _rows_of(chunk, plan)


def _rows_of(chunk: list[dict], plan: ExportPlan) -> list[dict]:
    item_ids = [r["pk"] for r in chunk]
    categories: dict[int, set[str]] = defaultdict(set)
    for prediction_id, slugs in (
        Feedback.objects.filter(
            project=plan.project, prediction_id__in=[r["prediction_id"] for r in chunk]
        )
        .exclude(categories=[])
        .values_list("prediction_id", "categories")
    ):
        categories[prediction_id].update(slugs or ())
    labels: dict[int, list[Label]] = defaultdict(list)
    for label in Label.objects.filter(item_id__in=item_ids).order_by("id"):
        labels[label.item_id].append(label)
    rows = []
    for r in chunk:
        consensus = r["consensus"] or {}
        item_labels = labels.get(r["pk"], [])
        row = {
            "external_id": r["prediction__external_id"],
            "model": r["prediction__model"],
            "model_version": r["prediction__model_version"],
            "input": r["prediction__input"],
            "output": r["prediction__output"],
            "predicted_label": r["prediction__label"],
            "confidence": r["prediction__confidence"],
            "segment": r["prediction__segment"] or {},
            "feedback_categories": sorted(categories.get(r["prediction_id"], ())),
            "verdict": consensus.get("verdict"),
            "true_label": consensus.get("true_label"),
            "label_categories": list(consensus.get("categories") or []),
            "correction": correction_of(item_labels, consensus.get("verdict")),
            "agreement": consensus.get("agreement"),
            "n_labels": consensus.get("n_labels", r["labels_count"]),
            "weight": 1.0 / r["inclusion_probability"],
            "split": r["split"],
        }
        if plan.include_labels:
            row["labels"] = [label_entry(label) for label in item_labels]
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
        params["completed_after"] = _as_datetime(spec["completed_after"])
    if spec.get("completed_before") is not None:
        clauses.append("qi.completed_at < %(completed_before)s")
        params["completed_before"] = _as_datetime(spec["completed_before"])
    for position, (key, value) in enumerate(sorted((spec.get("segment") or {}).items())):
        clauses.append(f"p.segment ->> %(seg_key_{position})s = %(seg_value_{position})s")
        params[f"seg_key_{position}"], params[f"seg_value_{position}"] = key, value
    return " AND ".join(clauses)


def _split_sql(plan: ExportPlan, params: dict[str, Any]) -> str:
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
        WHERE f.project_id = %(project)s AND f.categories <> '[]'::jsonb
        GROUP BY f.prediction_id
    ) fb ON fb.prediction_id = qi.prediction_id
"""

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

    ``arrow_reader``: the rows are read as Arrow columns (``labeling.pg_arrow``), not COPY text.
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
    inner = f"""
        SELECT qi.id AS item_id, qi.prediction_id, qi.inclusion_probability AS pi,
               qi.consensus, qi.labels_count, p.external_id, p.model, p.model_version,
               p.input, p.output, p.label, p.confidence, p.segment, {slugs},
               {_CORRECTION} AS correction{labels_column}, {split} AS split
        {_FROM} {_JOINS} {labels_join}
        WHERE {where}
        ORDER BY {ORDER_SQL}
        OFFSET 0
    """
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
            ("feedback_categories", feedback_list),
            ("verdict", "coalesce((x.consensus -> 'verdict')::text, 'null')"),
            ("true_label", "coalesce((x.consensus -> 'true_label')::text, 'null')"),
            ("label_categories", label_list),
            ("correction", "coalesce(x.correction::text, 'null')"),
            ("agreement", "coalesce(x.consensus ->> 'agreement', 'null')"),  # a JSON number
            ("n_labels", f"{n_labels}::text"),
            ("weight", "(1.0::float8 / x.pi)::text"),
            ("split", "'\"' || x.split || '\"'"),
        ]
        if plan.include_labels:
            pieces.append(("labels", "coalesce(x.labels, '[]'::jsonb)::text"))
        # One concat() call, not json_build_object (no per-row JSON value, compact separators)
        # nor a chain of || (each copies the whole line so far: quadratic in its length).
        parts = [] if arrow_reader else [code]
        for n, (name, expression) in enumerate(pieces):
            parts += [f"'{'{' if n == 0 else ','}\"{name}\":'", expression]
        if arrow_reader:
            select = f"SELECT {code} AS code, concat({', '.join(parts)}, E'}}\\n') AS line"
        else:
            select = f"SELECT concat({', '.join(parts)}, '}}')"
    else:
        if mode == "arrow":
            # Category slugs are letters, digits, '_' and '-' (validated at intake and labeling),
            # so a comma joins them unambiguously and pyarrow splits them back into lists.
            feedback_list = (
                "coalesce(x.slugs, '{}'::text[])" if arrow_reader else "coalesce(x.slugs, '')"
            )
            label_list = "translate(coalesce(x.consensus -> 'categories', '[]')::text, '[]\" ', '')"
        columns = [
            "x.external_id",
            "x.model",
            "x.model_version",
            "x.input::text",
            "x.output::text",
            "x.label",
            "x.confidence",
            "x.segment::text",
            feedback_list,
            "x.consensus ->> 'verdict'",
            "x.consensus ->> 'true_label'",
            label_list,
            "x.correction::text",
            "(x.consensus ->> 'agreement')::float8",
            n_labels,
            "1.0::float8 / x.pi",
            "x.split",
        ]
        if plan.include_labels:
            columns.append("coalesce(x.labels, '[]'::jsonb)::text")
        names = [name for name, _, _ in export_columns(include_labels=plan.include_labels)]
        # Aliases name the CSV header.
        rendered = [
            f'{expression} AS "{name}"' for expression, name in zip(columns, names, strict=True)
        ]
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


# --- visibility ------------------------------------------------------------------------------


def exports_visible_to(*, user: AbstractBaseUser) -> QuerySet[Export]:
    """Exports of the projects where the person is a data scientist or an admin."""
    projects = projects_for_user(user=user, roles=READ_ROLES)
    return Export.objects.filter(project__in=projects).select_related(
        "project", "queue", "gold_version", "requested_by"
    )


def exports_of_project(*, project_id: int) -> QuerySet[Export]:
    return Export.objects.filter(project_id=project_id).select_related(
        "project", "queue", "gold_version", "requested_by"
    )


def goldset_version_for_export(
    *, project_ids: QuerySet | list[int], slug: str, number: int, project_slug: str | None = None
) -> GoldSetVersion | None:
    versions = GoldSetVersion.objects.filter(
        gold_set__project__in=project_ids, gold_set__slug=slug, number=number
    ).select_related("gold_set", "gold_set__project")
    if project_slug:
        versions = versions.filter(gold_set__project__slug=project_slug)
    return versions.order_by("gold_set__project__slug").first()


def gold_items_for_export(*, version: GoldSetVersion) -> QuerySet[GoldItem]:
    return GoldItem.objects.filter(version=version).order_by("key")


__all__ = [
    "ExportPlan",
    "export_copy_sql",
    "export_count_sql",
    "export_items",
    "export_rows_portable",
    "exports_of_project",
    "exports_visible_to",
    "gold_group_keys",
    "gold_items_for_export",
    "gold_source_predictions",
    "gold_versions_touched",
    "goldset_version_for_export",
]
