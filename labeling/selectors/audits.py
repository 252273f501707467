"""The SQL of segment audits: labeled rows of a source, summed per segment in the database.

Nothing row-level reaches Python. A statement has three layers:

1. ``base`` — one row per audited unit (a completed, non-gold queue item with its prediction,
   or a gold item with the prediction that scores it): its segment values (JSON extraction,
   a missing key becomes ``MISSING``), weight ``w`` (1/π or 1), the verdict ``v`` (decided
   when ``correct`` or ``incorrect``), and 0/1 columns ``dsp`` (the prediction has a
   dispute), ``neg`` (it has negative feedback: a -1 rating, a report or a dispute) — plus the
   true and predicted labels ``tl`` / ``pl``. Feedback is pre-aggregated per prediction in a
   subquery, so a prediction with ten ratings is still one row.
2. ``cells`` — ``GROUP BY`` every column of ``base`` but the weight: count, Σw, Σw² per
   distinct combination. Every audited figure is linear in these, so the million rows become a
   few thousand cells in one hash aggregate.
3. the grouping sets — overall, each key, each intersection — over the cells: on PostgreSQL
   one ``GROUP BY GROUPING SETS`` statement; on SQLite (no grouping sets) one ``GROUP BY`` per
   set over the same CTEs.

For each figure (``MetricSql``: a denominator and an event, SQL conditions on the cell columns)
the sets return n, Σw, Σw² of the denominator and n, Σw of the event, which is what
``labeling.fairness`` needs for the Hájek estimate, Kish's n and Wilson's interval.

Gold-set sources: a gold item is scored by the prediction of the requested model version, in
the same project, whose ``external_id`` equals the item's key; failing that, the most recent
such prediction whose ``input`` equals the item's input (JSON equality on PostgreSQL, equality
of the stored JSON text on SQLite). Unmatched items are counted, not scored.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import QuerySet
from django.db.models.expressions import RawSQL

from feedback.models import Feedback, Prediction, Project
from feedback.selectors import projects_for_user

from ..fairness import Sums
from ..models import Audit, GoldItem, QueueItem
from .queues import READ_ROLES

MISSING = "∅"  # a row without the segment key (the symbol sampling uses for strata too)

QI = QueueItem._meta.db_table
PRED = Prediction._meta.db_table
FB = Feedback._meta.db_table
GOLD = GoldItem._meta.db_table

Progress = Callable[[float, str], None]


@dataclass(frozen=True, slots=True)
class AuditSource:
    """Where the audited rows come from (exactly one of queue, item ids, gold version)."""

    project_id: int
    queue_id: int | None = None
    # Export sources: the ids of the export's items, as SQL (``labeling.selectors.exports``).
    items_sql: tuple[str, tuple[Any, ...]] | None = None
    gold_version_id: int | None = None
    model_version: str | None = None

    @property
    def is_gold(self) -> bool:
        return self.gold_version_id is not None


@dataclass(frozen=True, slots=True)
class MetricSql:
    """One figure: the share of ``event`` among the rows meeting ``denominator``."""

    name: str
    denominator: str
    event: str
    denominator_params: tuple[Any, ...] = ()
    event_params: tuple[Any, ...] = ()


@dataclass(slots=True)
class GroupSums:
    keys: tuple[str, ...]  # () for overall
    values: tuple[str, ...]
    n: int
    sw: float
    sww: float
    metrics: dict[str, Sums] = field(default_factory=dict)


def metric_definitions(*, classes: Sequence[str], positive_label: str | None) -> list[MetricSql]:
    """The figures of an audit. Label figures only when there are classes to compare."""
    metrics = [
        MetricSql("error_rate", "v IN ('correct', 'incorrect')", "v = 'incorrect'"),
        MetricSql("dispute_rate", "1 = 1", "dsp = 1"),
        MetricSql("negative_feedback_rate", "1 = 1", "neg = 1"),
    ]
    if not classes:
        return metrics
    metrics.append(MetricSql("accuracy", "tl IS NOT NULL", "pl = tl"))
    if positive_label is not None:
        p = (positive_label,)
        metrics += [
            MetricSql("selection_rate", "pl IS NOT NULL", "pl = %s", (), p),
            MetricSql("fpr", "tl IS NOT NULL AND tl <> %s", "pl = %s", p, p),
            MetricSql("fnr", "tl = %s", "(pl IS NULL OR pl <> %s)", p, p),
        ]
    for label in classes:
        c = (label,)
        metrics += [
            MetricSql(f"precision:{label}", "tl IS NOT NULL AND pl = %s", "tl = %s", c, c),
            MetricSql(f"recall:{label}", "tl = %s", "pl = %s", c, c),
        ]
    return metrics


def grouping_sets(keys: Sequence[str], *, intersectional: bool) -> list[tuple[str, ...]]:
    """Overall, each key, then (when asked) every combination of two or more keys."""
    sets: list[tuple[str, ...]] = [(), *((key,) for key in keys)]
    if intersectional:
        for size in range(2, len(keys) + 1):
            sets += list(itertools.combinations(keys, size))
    return sets


# --- SQL pieces ------------------------------------------------------------------------------


def _postgres() -> bool:
    return connection.vendor == "postgresql"


def _json_text(column: str, key: str) -> tuple[str, tuple[Any, ...]]:
    """The text of ``column[key]`` (a JSON object column), NULL when absent."""
    if _postgres():
        return f"({column} ->> %s)", (key,)
    # Keys are validated to letters, digits, '_' and '-', so quoting them in the path is safe.
    return f"json_extract({column}, %s)", (f'$."{key}"',)


def _feedback_sql(project_id: int) -> tuple[str, tuple[Any, ...]]:
    sql = f"""
        SELECT f.prediction_id AS prediction_id,
               MAX(CASE WHEN f.kind = 'dispute' THEN 1 ELSE 0 END) AS disputed,
               MAX(CASE WHEN f.kind IN ('report', 'dispute') OR f.rating < 0
                        THEN 1 ELSE 0 END) AS negative
        FROM {FB} f
        WHERE f.project_id = %s
        GROUP BY f.prediction_id"""
    return sql, (project_id,)


def _segment_columns(keys: Sequence[str], segment_column: str) -> tuple[list[str], list[Any]]:
    columns, params = [], []
    for position, key in enumerate(keys):
        expression, key_params = _json_text(segment_column, key)
        columns.append(f"COALESCE({expression}, %s) AS s{position}")
        params += [*key_params, MISSING]
    return columns, params


def _queue_base(
    source: AuditSource, keys: Sequence[str], *, weighted: bool, labels: bool
) -> tuple[list[tuple[str, str]], list[Any]]:
    """CTEs ending in ``base`` for queue and export sources."""
    segments, params = _segment_columns(keys, "p.segment")
    verdict, verdict_params = _json_text("qi.consensus", "verdict")
    # Double precision on both backends: a numeric 1.0 would make PostgreSQL sum in numeric.
    weight = "1.0 / qi.inclusion_probability" if weighted else "CAST(1 AS DOUBLE PRECISION)"
    select = [*segments, f"{weight} AS w"]
    # The verdict as it is (one extraction per row); what counts as decided is the metric's.
    select.append(f"{verdict} AS v")
    params += list(verdict_params)
    select += ["COALESCE(fb.disputed, 0) AS dsp", "COALESCE(fb.negative, 0) AS neg"]
    if labels:
        true_label, true_params = _json_text("qi.consensus", "true_label")
        select += [f"NULLIF({true_label}, '') AS tl", "p.label AS pl"]
        params += list(true_params)
    else:
        select += ["CAST(NULL AS TEXT) AS tl", "CAST(NULL AS TEXT) AS pl"]
    feedback_sql, feedback_params = _feedback_sql(source.project_id)
    params += list(feedback_params)
    where = [
        "qi.status = 'complete'",
        "qi.gold_item_id IS NULL",  # hidden gold checks are never production labels
        "p.project_id = %s",
    ]
    params.append(source.project_id)
    if source.queue_id is not None:
        where.append("qi.queue_id = %s")
        params.append(source.queue_id)
    if source.items_sql is not None:
        items_sql, items_params = source.items_sql
        where.append(f"qi.id IN ({items_sql})")
        params += list(items_params)
    if source.model_version is not None:
        where.append("p.model_version = %s")
        params.append(source.model_version)
    base = f"""
        SELECT {", ".join(select)}
        FROM {QI} qi
        JOIN {PRED} p ON p.id = qi.prediction_id
        LEFT JOIN ({feedback_sql}) fb ON fb.prediction_id = p.id
        WHERE {" AND ".join(where)}"""
    return [("base", base)], params


def _gold_match_sql(source: AuditSource) -> tuple[str, list[Any]]:
    """CTE body: (gid, pid) of each matched gold item, key matches first (see the module doc)."""
    match_params = [source.project_id, source.model_version, source.gold_version_id]
    sql = f"""
        SELECT gid, pid FROM (
            SELECT gid, pid,
                   ROW_NUMBER() OVER (PARTITION BY gid ORDER BY priority, pid DESC) AS match_rank
            FROM (
                SELECT g.id AS gid, p.id AS pid, 0 AS priority
                FROM {GOLD} g JOIN {PRED} p
                  ON p.project_id = %s AND p.model_version = %s AND p.external_id = g.key
                WHERE g.version_id = %s
                UNION ALL
                SELECT g.id AS gid, p.id AS pid, 1 AS priority
                FROM {GOLD} g JOIN {PRED} p
                  ON p.project_id = %s AND p.model_version = %s AND p.input = g.input
                WHERE g.version_id = %s
            ) candidates
        ) ranked
        WHERE match_rank = 1"""
    return sql, match_params * 2


def _gold_base(
    source: AuditSource, keys: Sequence[str], *, labels: bool
) -> tuple[list[tuple[str, str]], list[Any]]:
    """CTEs ending in ``base`` for a gold-set version scored by a model version's predictions.

    Decided: the gold item expects a label (error: the prediction's label differs), or it
    expects a verdict on an output identical to the prediction's (error: that verdict is
    ``incorrect``). Weights are 1: a gold set is not a probability sample.
    """
    match_sql, params = _gold_match_sql(source)
    segments, segment_params = _segment_columns(keys, "g.segment")
    params += segment_params
    expected = "NULLIF(g.expected_label, '')"
    same_output = "p.output = g.output"
    select = [
        *segments,
        "CAST(1 AS DOUBLE PRECISION) AS w",
        f"""CASE WHEN {expected} IS NOT NULL THEN
                     CASE WHEN p.label IS NULL OR p.label <> g.expected_label
                          THEN 'incorrect' ELSE 'correct' END
                 WHEN g.expected_verdict IN ('correct', 'incorrect') AND {same_output}
                     THEN g.expected_verdict
                 END AS v""",
        "COALESCE(fb.disputed, 0) AS dsp",
        "COALESCE(fb.negative, 0) AS neg",
    ]
    if labels:
        select += [f"{expected} AS tl", "p.label AS pl"]
    else:
        select += ["CAST(NULL AS TEXT) AS tl", "CAST(NULL AS TEXT) AS pl"]
    feedback_sql, feedback_params = _feedback_sql(source.project_id)
    params += list(feedback_params)
    base = f"""
        SELECT {", ".join(select)}
        FROM {GOLD} g
        JOIN matched m ON m.gid = g.id
        JOIN {PRED} p ON p.id = m.pid
        LEFT JOIN ({feedback_sql}) fb ON fb.prediction_id = p.id"""
    return [("matched", match_sql), ("base", base)], params


def _base(
    source: AuditSource, keys: Sequence[str], *, weighted: bool, labels: bool
) -> tuple[str, list[Any]]:
    """``WITH …`` text defining ``base`` (without the final SELECT), and its parameters."""
    if source.is_gold:
        ctes, params = _gold_base(source, keys, labels=labels)
    else:
        ctes, params = _queue_base(source, keys, weighted=weighted, labels=labels)
    return "WITH " + ",\n".join(f"{name} AS ({sql})" for name, sql in ctes), params


# PostgreSQL settings for the aggregation, local to its transaction. Found with EXPLAIN
# ANALYZE on a million rows (README, "Benchmarks"):
# - jit off: the statement has ~90 aggregate expressions, and compiling them took 14 s of CPU
#   over the leader and two parallel workers, more than running the whole statement;
# - work_mem 64MB: the planner cannot know that the cells are a few hundred (it guesses one
#   per row for GROUP BY on expressions), so it groups them by sorting the joined rows, which
#   spilled to disk (external merge) at the default 4MB.
PLANNER_SETTINGS = ("jit = off", "work_mem = '64MB'")


def _fetch_planned(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    with transaction.atomic(), connection.cursor() as cursor:
        for setting in PLANNER_SETTINGS:
            cursor.execute(f"SET LOCAL {setting}")
        cursor.execute(sql, list(params))
        rows = cursor.fetchall()
        for setting in PLANNER_SETTINGS:  # inside a caller's transaction, leave it as it was
            cursor.execute(f"SET LOCAL {setting.split(' = ')[0]} TO DEFAULT")
        return rows


def _fetch(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, list(params))
        return cursor.fetchall()


# --- public reads ----------------------------------------------------------------------------


def audit_rows_count(*, source: AuditSource) -> int:
    """How many rows an audit of ``source`` reads (matched gold items for a gold source)."""
    if source.is_gold:
        with_sql, params = _base(source, [], weighted=False, labels=False)
        return int(_fetch(f"{with_sql} SELECT COUNT(*) FROM base", params)[0][0])
    # Queue and export rows: the same WHERE without the feedback join and JSON (a cheap count
    # decides whether the request waits for the audit).
    items = QueueItem.objects.filter(
        status=QueueItem.Status.COMPLETE,
        gold_item__isnull=True,
        prediction__project_id=source.project_id,
    )
    if source.queue_id is not None:
        items = items.filter(queue_id=source.queue_id)
    if source.items_sql is not None:
        items = items.filter(pk__in=RawSQL(*source.items_sql))
    if source.model_version is not None:
        items = items.filter(prediction__model_version=source.model_version)
    return items.count()


def gold_items_count(*, gold_version_id: int) -> int:
    return GoldItem.objects.filter(version_id=gold_version_id).count()


def audit_observed_labels(*, source: AuditSource) -> list[str]:
    """The true and predicted labels present in a source's rows, sorted (for sources without
    declared label choices: gold versions)."""
    with_sql, params = _base(source, [], weighted=False, labels=True)
    sql = f"""{with_sql}
        SELECT DISTINCT label FROM (
            SELECT tl AS label FROM base WHERE tl IS NOT NULL
            UNION SELECT pl AS label FROM base WHERE pl IS NOT NULL AND tl IS NOT NULL
        ) labels"""
    return sorted(str(row[0]) for row in _fetch(sql, params))


def audit_aggregate(
    *,
    source: AuditSource,
    keys: Sequence[str],
    sets: Sequence[tuple[str, ...]],
    metrics: Sequence[MetricSql],
    weighted: bool,
    labels: bool,
    on_progress: Progress | None = None,
) -> list[GroupSums]:
    """Sums per group of every grouping set (``()`` is overall). See the module docstring."""
    report = on_progress or (lambda fraction, stage: None)
    with_sql, base_params = _base(source, keys, weighted=weighted, labels=labels)
    segment_columns = [f"s{i}" for i in range(len(keys))]
    cell_columns = [*segment_columns, "v", "dsp", "neg", "tl", "pl"]
    cells = f"""cells AS (
        SELECT {", ".join(cell_columns)}, COUNT(*) AS cnt, SUM(w) AS sw, SUM(w * w) AS sww
        FROM base GROUP BY {", ".join(cell_columns)})"""
    with_sql = f"{with_sql},\n{cells}"
    aggregates, aggregate_params = _aggregates(metrics)
    position = {key: i for i, key in enumerate(keys)}

    def select_for(group_set: tuple[str, ...], tag: str) -> str:
        shown = [f"s{position[key]}" if key in group_set else "CAST(NULL AS TEXT)" for key in keys]
        return ", ".join([tag, *shown, "SUM(cnt)", "SUM(sw)", "SUM(sww)", *aggregates])

    rows: list[tuple[tuple[str, ...], tuple[Any, ...]]] = []
    if _postgres():
        # One scan: GROUPING() tells which set a row belongs to (bit set = column not grouped).
        grouping = f"GROUPING({', '.join(segment_columns)})" if keys else "0"
        spec = ", ".join(
            "(" + ", ".join(f"s{position[key]}" for key in group_set) + ")" for group_set in sets
        )
        report(0.1, "aggregating (one GROUP BY GROUPING SETS)")
        sql = f"{with_sql} SELECT {select_for(tuple(keys), grouping)} FROM cells "
        sql += f"GROUP BY GROUPING SETS ({spec})" if keys else ""
        masks = {_mask(group_set, keys): group_set for group_set in sets}
        for row in _fetch_planned(sql, [*base_params, *aggregate_params]):
            rows.append((masks[int(row[0])], row))
    else:
        for done, group_set in enumerate(sets):
            report(0.1 + 0.8 * done / len(sets), f"aggregating {', '.join(group_set) or 'all'}")
            group_by = ", ".join(f"s{position[key]}" for key in group_set)
            sql = f"{with_sql} SELECT {select_for(group_set, '0')} FROM cells"
            sql += f" GROUP BY {group_by}" if group_set else ""
            for row in _fetch(sql, [*base_params, *aggregate_params]):
                rows.append((group_set, row))
    report(0.9, "estimating")
    return [_group(group_set, row, keys, position, metrics) for group_set, row in rows]


def _mask(group_set: tuple[str, ...], keys: Sequence[str]) -> int:
    mask = 0
    for key in keys:
        mask = (mask << 1) | (0 if key in group_set else 1)
    return mask


def _aggregates(metrics: Sequence[MetricSql]) -> tuple[list[str], list[Any]]:
    columns: list[str] = []
    params: list[Any] = []
    for metric in metrics:
        d, e = metric.denominator, f"({metric.denominator}) AND ({metric.event})"
        d_params = list(metric.denominator_params)
        e_params = [*metric.denominator_params, *metric.event_params]
        for condition, condition_params, column in (
            (d, d_params, "cnt"),
            (d, d_params, "sw"),
            (d, d_params, "sww"),
            (e, e_params, "cnt"),
            (e, e_params, "sw"),
        ):
            columns.append(f"SUM(CASE WHEN {condition} THEN {column} ELSE 0 END)")
            params += condition_params
    return columns, params


def _group(
    group_set: tuple[str, ...],
    row: tuple[Any, ...],
    keys: Sequence[str],
    position: dict[str, int],
    metrics: Sequence[MetricSql],
) -> GroupSums:
    values = tuple(str(row[1 + position[key]]) for key in group_set)
    offset = 1 + len(keys)
    n, sw, sww = row[offset : offset + 3]
    group = GroupSums(group_set, values, int(n or 0), float(sw or 0), float(sww or 0))
    offset += 3
    for metric in metrics:
        md_n, md_sw, md_sww, mk, mk_sw = row[offset : offset + 5]
        offset += 5
        group.metrics[metric.name] = Sums(
            int(md_n or 0), float(md_sw or 0), float(md_sww or 0), int(mk or 0), float(mk_sw or 0)
        )
    return group


# --- who sees which audits -------------------------------------------------------------------


def audits_for_project(*, project_id: int) -> QuerySet[Audit]:
    return Audit.objects.filter(project_id=project_id).select_related(
        "project", "requested_by", "queue", "export", "gold_version__gold_set"
    )


def audit_projects_for_user(*, user: AbstractBaseUser) -> QuerySet[Project]:
    """Projects whose audits a person may read and request: data scientists and admins."""
    return projects_for_user(user=user, roles=READ_ROLES)
