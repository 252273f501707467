"""Hourly rollups, kept current incrementally and rebuilt from scratch by the same counts.

Bucket: the hour of the prediction's ``occurred_at``, for every count (the prediction itself,
its feedback, its disputes' outcomes, its completed reviews). A feedback about last week's
prediction lands in last week's hour; a dispute upheld today changes the hour of the prediction
it disputes. A rate's numerator and denominator so describe the same predictions; the price is
that the latest hours keep filling in as feedback arrives (the admin page says so).

What the rollups hold: every prediction with an id up to the prediction watermark, every
feedback up to the feedback watermark (with its dispute status as of the last time its hour
was counted), every completed review. Incremental step (``rollups_step``), in ONE transaction:
1. Lock the watermark row (``RollupState``); a second concurrent step waits, then finds no work.
2. New tops: only rows created more than ``REDRESS_ROLLUP_LAG_SECONDS`` ago set the new id
   watermark: ids are handed out when a row is inserted but become visible when its
   transaction commits, so a row with a smaller id can appear after a larger one; waiting out
   the lag (intake transactions last milliseconds) keeps such a row above the watermark. A row
   that still slipped through is counted the next time its hour is recounted, and
   ``rebuild_rollups`` recounts everything.
3. New feedback (ids between the old and the new watermark; feedback rows are appended, their
   later changes come as dispute events or ``revised_at`` stamps, see 4) is *added*: on
   PostgreSQL one ``INSERT ... SELECT ... GROUP BY ... ON CONFLICT DO UPDATE`` per rollup
   table, reading the new rows through the primary key, so 1M new feedback rows cost one pass
   over those rows and nothing over the old ones.
4. Hours that changed otherwise are *recounted* from the raw rows (delete, insert), bounded by
   the new watermarks, after the additions (a recount overrides what step 3 added to its
   hour): the hours of new predictions (usually the current one), of dispute events (a
   dispute resolved), of reviews completed or labels edited (by time), of feedback changed in
   place (a token rating changed by its end user: ``Feedback.revised_at`` after the revision
   watermark, up to the same lag cutoff as the other watermarks). (SQLite, the test
   database: the hours of new feedback are recounted too, in Python, instead of step 3.)
5. Advance the watermarks. A crash rolls everything back; a double run finds nothing new.

``rollups_rebuild`` recounts every hour of every project with the function of step 4.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, FloatField, Max, Min, Sum, Value
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, TruncHour
from django.utils import timezone

from feedback.models import DisputeEvent, Feedback, Prediction
from labeling.models import Label, QueueItem

from .models import CategoryRollup, MetricRollup, MonitoringSettings, RollupState

HOUR = dt.timedelta(hours=1)
# Recompute at most this many contiguous hours per query.
RUN_HOURS = 24 * 31


def monitored_keys(project_id: int) -> list[str]:
    keys = (
        MonitoringSettings.objects.filter(project_id=project_id)
        .values_list("monitored_segment_keys", flat=True)
        .first()
    )
    return [k for k in (keys or []) if isinstance(k, str) and k]


def _hour(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def _runs(hours: Iterable[dt.datetime]) -> list[tuple[dt.datetime, dt.datetime]]:
    """Contiguous runs [start, end) of the given hours."""
    runs: list[list[dt.datetime]] = []
    for hour in sorted(set(hours)):
        if runs and hour == runs[-1][1] and hour - runs[-1][0] < RUN_HOURS * HOUR:
            runs[-1][1] = hour + HOUR
        else:
            runs.append([hour, hour + HOUR])
    return [(s, e) for s, e in runs]


def _segments(prefix: str, keys: list[str]) -> dict:
    return {f"seg{i}": KeyTextTransform(key, f"{prefix}segment") for i, key in enumerate(keys)}


def _dims(row: dict, keys: list[str], version: str, hour: dt.datetime):
    """The rollup rows a raw group counts in: the project-wide one and one per monitored key
    whose value the prediction has."""
    yield (version, hour, "", "")
    for i, key in enumerate(keys):
        value = row.get(f"seg{i}")
        if value is not None and value != "":
            yield (version, hour, key, str(value)[:200])


def compute_buckets(
    project_id: int, start: dt.datetime, end: dt.datetime, tops: tuple[int, int]
) -> tuple[list, list]:
    """The MetricRollup and CategoryRollup rows of a project for the hours [start, end),
    counted from raw rows (predictions and feedback up to the ids ``tops``)."""
    keys = monitored_keys(project_id)
    p_top, f_top = tops
    counts: dict[tuple, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    categories: dict[tuple, int] = defaultdict(int)

    predictions = (
        Prediction.objects.filter(
            project_id=project_id, occurred_at__gte=start, occurred_at__lt=end, pk__lte=p_top
        )
        .annotate(h=TruncHour("occurred_at"), **_segments("", keys))
        .values("h", "model_version", *[f"seg{i}" for i in range(len(keys))])
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in predictions:
        for dim in _dims(row, keys, row["model_version"], row["h"]):
            counts[dim]["predictions"] += row["n"]

    feedback = (
        Feedback.objects.filter(
            project_id=project_id,
            prediction__occurred_at__gte=start,
            prediction__occurred_at__lt=end,
            pk__lte=f_top,
        )
        .annotate(
            h=TruncHour("prediction__occurred_at"),
            mv=F("prediction__model_version"),
            **_segments("prediction__", keys),
        )
        .values(
            "h",
            "mv",
            "kind",
            "rating",
            "status",
            "categories",
            *[f"seg{i}" for i in range(len(keys))],
        )
        .annotate(n=Count("id"))
        .order_by()
    )
    Kind, Status = Feedback.Kind, Feedback.DisputeStatus
    for row in feedback:
        n = row["n"]
        for dim in _dims(row, keys, row["mv"], row["h"]):
            c = counts[dim]
            if row["kind"] == Kind.RATING:
                c["ratings_positive" if (row["rating"] or 0) > 0 else "ratings_negative"] += (
                    n if row["rating"] is not None else 0
                )
            elif row["kind"] == Kind.REPORT:
                c["reports"] += n
            elif row["kind"] == Kind.DISPUTE:
                c["disputes"] += n
                if row["status"] == Status.UPHELD:
                    c["disputes_upheld"] += n
                elif row["status"] == Status.REJECTED:
                    c["disputes_rejected"] += n
            for slug in row["categories"] or []:
                categories[(*dim, slug)] += n

    reviews = (
        QueueItem.objects.filter(
            status=QueueItem.Status.COMPLETE,
            gold_item__isnull=True,
            prediction__project_id=project_id,
            prediction__occurred_at__gte=start,
            prediction__occurred_at__lt=end,
        )
        .annotate(
            h=TruncHour("prediction__occurred_at"),
            mv=F("prediction__model_version"),
            verdict=KeyTextTransform("verdict", "consensus"),
            **_segments("prediction__", keys),
        )
        .values("h", "mv", "verdict", *[f"seg{i}" for i in range(len(keys))])
        .annotate(
            n=Count("id"),
            w=Sum(Value(1.0) / Cast("inclusion_probability", FloatField())),
            w2=Sum(
                Value(1.0)
                / (Cast("inclusion_probability", FloatField()) * F("inclusion_probability"))
            ),
        )
        .order_by()
    )
    for row in reviews:
        verdict = row["verdict"]
        if verdict not in ("correct", "incorrect", "unsure"):
            continue
        for dim in _dims(row, keys, row["mv"], row["h"]):
            c = counts[dim]
            c[f"reviews_{verdict}"] += row["n"]
            if verdict != "unsure":
                c[f"weight_{verdict}"] += row["w"] or 0.0
                c[f"weight2_{verdict}"] += row["w2"] or 0.0

    metric_rows = [
        MetricRollup(
            project_id=project_id,
            model_version=mv,
            hour=hour,
            segment_key=key,
            segment_value=value,
            **{name: (int(v) if not name.startswith("weight") else v) for name, v in c.items()},
        )
        for (mv, hour, key, value), c in counts.items()
    ]
    category_rows = [
        CategoryRollup(
            project_id=project_id,
            model_version=mv,
            hour=hour,
            segment_key=key,
            segment_value=value,
            category=slug,
            feedback=n,
        )
        for (mv, hour, key, value, slug), n in categories.items()
    ]
    return metric_rows, category_rows


def _replace(project_id: int, start: dt.datetime, end: dt.datetime, tops: tuple[int, int]) -> int:
    window = {"project_id": project_id, "hour__gte": start, "hour__lt": end}
    MetricRollup.objects.filter(**window).delete()
    CategoryRollup.objects.filter(**window).delete()
    if connection.vendor == "postgresql":
        return _replace_in_sql(project_id, start, end, tops)
    metric_rows, category_rows = compute_buckets(project_id, start, end, tops)
    MetricRollup.objects.bulk_create(metric_rows, batch_size=2000)
    CategoryRollup.objects.bulk_create(category_rows, batch_size=2000)
    return len(metric_rows)


# PostgreSQL: the same counts as ``compute_buckets``, computed and written by the database in
# two statements (no rows through Python: 1M feedback rows fold in seconds, not minutes).
_HOUR_SQL = "date_trunc('hour', p.occurred_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
_SOURCES_SQL = f"""
    SELECT p.model_version AS mv, {_HOUR_SQL} AS h, p.segment AS seg,
           1 AS predictions, 0 AS rp, 0 AS rn, 0 AS reports, 0 AS disputes, 0 AS upheld,
           0 AS rejected, 0 AS rc, 0 AS ri, 0 AS ru, 0.0 AS wc, 0.0 AS wi, 0.0 AS w2c,
           0.0 AS w2i
    FROM feedback_prediction p
    WHERE p.project_id = %(project)s AND p.occurred_at >= %(start)s AND p.occurred_at < %(end)s
      AND p.id <= %(p_top)s
    UNION ALL
    SELECT p.model_version, {_HOUR_SQL}, p.segment, 0,
           (f.kind = 'rating' AND f.rating > 0)::int, (f.kind = 'rating' AND f.rating <= 0)::int,
           (f.kind = 'report')::int, (f.kind = 'dispute')::int,
           (f.kind = 'dispute' AND f.status = 'upheld')::int,
           (f.kind = 'dispute' AND f.status = 'rejected')::int, 0, 0, 0, 0.0, 0.0, 0.0, 0.0
    FROM feedback_feedback f JOIN feedback_prediction p ON p.id = f.prediction_id
    WHERE f.project_id = %(project)s AND p.occurred_at >= %(start)s AND p.occurred_at < %(end)s
      AND f.id <= %(f_top)s
    UNION ALL
    SELECT p.model_version, {_HOUR_SQL}, p.segment, 0, 0, 0, 0, 0, 0, 0,
           (v = 'correct')::int, (v = 'incorrect')::int, (v = 'unsure')::int,
           CASE WHEN v = 'correct' THEN 1.0 / q.inclusion_probability ELSE 0.0 END,
           CASE WHEN v = 'incorrect' THEN 1.0 / q.inclusion_probability ELSE 0.0 END,
           CASE WHEN v = 'correct' THEN 1.0 / q.inclusion_probability ^ 2 ELSE 0.0 END,
           CASE WHEN v = 'incorrect' THEN 1.0 / q.inclusion_probability ^ 2 ELSE 0.0 END
    FROM labeling_queueitem q JOIN feedback_prediction p ON p.id = q.prediction_id
         CROSS JOIN LATERAL (SELECT q.consensus ->> 'verdict' AS v) verdict
    WHERE q.status = 'complete' AND q.gold_item_id IS NULL AND p.project_id = %(project)s
      AND p.occurred_at >= %(start)s AND p.occurred_at < %(end)s
      AND v IN ('correct', 'incorrect', 'unsure')
"""
_DIMS_SQL = """
    CROSS JOIN LATERAL (
        SELECT '' AS sk, '' AS sv
        UNION ALL
        SELECT k, left(s.seg ->> k, 200) FROM unnest(%(keys)s::text[]) AS k
        WHERE s.seg ->> k IS NOT NULL AND s.seg ->> k <> ''
    ) d
"""


def _replace_in_sql(
    project_id: int, start: dt.datetime, end: dt.datetime, tops: tuple[int, int]
) -> int:
    params = {"project": project_id, "start": start, "end": end, "p_top": tops[0],
              "f_top": tops[1], "keys": monitored_keys(project_id)}  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO monitoring_metricrollup (project_id, model_version, hour, segment_key,
                segment_value, predictions, ratings_positive, ratings_negative, reports,
                disputes, disputes_upheld, disputes_rejected, reviews_correct,
                reviews_incorrect, reviews_unsure, weight_correct, weight_incorrect,
                weight2_correct, weight2_incorrect)
            SELECT %(project)s, s.mv, s.h, d.sk, d.sv, sum(predictions), sum(rp), sum(rn),
                   sum(reports), sum(disputes), sum(upheld), sum(rejected), sum(rc), sum(ri),
                   sum(ru), sum(wc), sum(wi), sum(w2c), sum(w2i)
            FROM ({_SOURCES_SQL}) s {_DIMS_SQL}
            GROUP BY s.mv, s.h, d.sk, d.sv""",
            params,
        )
        written = cursor.rowcount
        cursor.execute(
            f"""
            INSERT INTO monitoring_categoryrollup (project_id, model_version, hour, segment_key,
                segment_value, category, feedback)
            SELECT %(project)s, s.mv, s.h, d.sk, d.sv, s.category, count(*)
            FROM (SELECT p.model_version AS mv, {_HOUR_SQL} AS h, p.segment AS seg,
                         jsonb_array_elements_text(f.categories) AS category
                  FROM feedback_feedback f JOIN feedback_prediction p ON p.id = f.prediction_id
                  WHERE f.project_id = %(project)s AND p.occurred_at >= %(start)s
                    AND p.occurred_at < %(end)s AND f.id <= %(f_top)s
                    AND jsonb_typeof(f.categories) = 'array') s
            {_DIMS_SQL}
            GROUP BY s.mv, s.h, d.sk, d.sv, s.category""",
            params,
        )
    return written


def buckets_replace(touched: dict[int, set[dt.datetime]], tops: tuple[int, int]) -> int:
    """Recount the given hours of each project from the raw rows (predictions and feedback up
    to the ids ``tops``), inside the caller's transaction."""
    written = 0
    for project_id, hours in touched.items():
        for start, end in _runs(hours):
            written += _replace(project_id, start, end, tops)
    return written


# PostgreSQL: new feedback (ids in (from, top]) added to the rollups. It is first counted per
# prediction (narrow rows, read by the primary key), then joined to its prediction once for
# the hour, version and segment.
_KEYS_DIMS_SQL = """
    CROSS JOIN LATERAL (
        SELECT '' AS sk, '' AS sv
        UNION ALL
        SELECT k, left(s.seg ->> k, 200)
        FROM jsonb_array_elements_text(%(keys)s::jsonb -> s.project_id::text) AS k
        WHERE s.seg ->> k IS NOT NULL AND s.seg ->> k <> ''
    ) d
"""
_ADD_METRICS_SQL = f"""
    WITH added AS (
        INSERT INTO monitoring_metricrollup AS r (project_id, model_version, hour,
            segment_key, segment_value, predictions, ratings_positive, ratings_negative,
            reports, disputes, disputes_upheld, disputes_rejected, reviews_correct,
            reviews_incorrect, reviews_unsure, weight_correct, weight_incorrect,
            weight2_correct, weight2_incorrect)
        SELECT s.project_id, s.mv, s.h, d.sk, d.sv, sum(s.predictions), sum(s.rp), sum(s.rn),
               sum(s.reports), sum(s.disputes), sum(s.upheld), sum(s.rejected), 0, 0, 0, 0, 0,
               0, 0
        FROM (
            SELECT p.project_id, p.model_version AS mv, {_HOUR_SQL} AS h, p.segment AS seg,
                   0 AS predictions, f.rp, f.rn, f.reports, f.disputes, f.upheld, f.rejected
            FROM (
                SELECT prediction_id,
                       count(*) FILTER (WHERE kind = 'rating' AND rating > 0) AS rp,
                       count(*) FILTER (WHERE kind = 'rating' AND rating <= 0) AS rn,
                       count(*) FILTER (WHERE kind = 'report') AS reports,
                       count(*) FILTER (WHERE kind = 'dispute') AS disputes,
                       count(*) FILTER (WHERE kind = 'dispute' AND status = 'upheld') AS upheld,
                       count(*) FILTER (WHERE kind = 'dispute' AND status = 'rejected')
                           AS rejected
                FROM feedback_feedback
                WHERE id > %(f_from)s AND id <= %(f_top)s
                GROUP BY prediction_id
            ) f JOIN feedback_prediction p ON p.id = f.prediction_id
        ) s {_KEYS_DIMS_SQL}
        GROUP BY s.project_id, s.mv, s.h, d.sk, d.sv
        ON CONFLICT (project_id, segment_key, segment_value, model_version, hour) DO UPDATE
        SET ratings_positive = r.ratings_positive + excluded.ratings_positive,
            ratings_negative = r.ratings_negative + excluded.ratings_negative,
            reports = r.reports + excluded.reports,
            disputes = r.disputes + excluded.disputes,
            disputes_upheld = r.disputes_upheld + excluded.disputes_upheld,
            disputes_rejected = r.disputes_rejected + excluded.disputes_rejected
        RETURNING r.project_id, r.hour
    )
    SELECT project_id, hour, count(*) FROM added GROUP BY project_id, hour
"""
_ADD_CATEGORIES_SQL = f"""
    INSERT INTO monitoring_categoryrollup AS r (project_id, model_version, hour, segment_key,
        segment_value, category, feedback)
    SELECT s.project_id, s.mv, s.h, d.sk, d.sv, s.category, sum(s.n)
    FROM (
        SELECT p.project_id, p.model_version AS mv, {_HOUR_SQL} AS h, p.segment AS seg,
               c.category, c.n
        FROM (
            SELECT f.prediction_id, e.category, count(*) AS n
            FROM feedback_feedback f
                 CROSS JOIN LATERAL jsonb_array_elements_text(f.categories) AS e(category)
            WHERE f.id > %(f_from)s AND f.id <= %(f_top)s
              AND jsonb_typeof(f.categories) = 'array'
            GROUP BY f.prediction_id, e.category
        ) c JOIN feedback_prediction p ON p.id = c.prediction_id
    ) s {_KEYS_DIMS_SQL}
    GROUP BY s.project_id, s.mv, s.h, d.sk, d.sv, s.category
    ON CONFLICT (project_id, category, segment_key, segment_value, model_version, hour)
    DO UPDATE SET feedback = r.feedback + excluded.feedback
"""


def _bulk_settings() -> None:
    """For this transaction only: no JIT (compiling these few big statements costs seconds
    and saves nothing) and room to hash a step's groups in memory (a million feedback rows
    counted per prediction: ~50 MB; with the default 4 MB the planner walks the feedback by
    its prediction index instead, a random read per row)."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL jit = off")
        cursor.execute("SET LOCAL work_mem = '64MB'")


def _add_feedback_in_sql(first: int, top: int, touched: dict[int, set[dt.datetime]]) -> int:
    """Add the feedback with ids in (first, top] to the rollups; their hours join ``touched``
    (the step's count of hours)."""
    keys = {
        str(project_id): [k for k in (value or []) if isinstance(k, str) and k]
        for project_id, value in MonitoringSettings.objects.values_list(
            "project_id", "monitored_segment_keys"
        )
        if isinstance(value, list)
    }
    params = {"f_from": first, "f_top": top, "keys": json.dumps(keys)}
    written = 0
    with connection.cursor() as cursor:
        cursor.execute(_ADD_METRICS_SQL, params)
        for project_id, hour, rows in cursor.fetchall():
            touched[project_id].add(hour)
            written += rows
        cursor.execute(_ADD_CATEGORIES_SQL, params)
    return written


def _touched_by(queryset, project_field: str, time_field: str, touched) -> None:
    rows = (
        queryset.annotate(h=TruncHour(time_field), p=F(project_field))
        .values("p", "h")
        .distinct()
        .order_by()
    )
    for row in rows:
        if row["h"] is not None:
            touched[row["p"]].add(row["h"])


def _id_watermark(model, after: int, cutoff: dt.datetime) -> int:
    """The largest id above ``after`` among rows older than the cutoff (``after`` if none)."""
    top = model.objects.filter(pk__gt=after, created_at__lte=cutoff).aggregate(m=Max("pk"))["m"]
    return top if top is not None else after


def rollups_step(*, now: dt.datetime | None = None, lag_seconds: int | None = None) -> dict:
    """Fold everything that changed since the watermarks into the rollups (one transaction)."""
    now = now or timezone.now()
    lag = settings.REDRESS_ROLLUP_LAG_SECONDS if lag_seconds is None else lag_seconds
    cutoff = now - dt.timedelta(seconds=lag)
    RollupState.objects.get_or_create(pk=1)
    with transaction.atomic():
        state = RollupState.objects.select_for_update().get(pk=1)
        in_sql = connection.vendor == "postgresql"
        if in_sql:
            _bulk_settings()
        recount: dict[int, set[dt.datetime]] = defaultdict(set)
        p_top = _id_watermark(Prediction, state.prediction_id, cutoff)
        f_top = _id_watermark(Feedback, state.feedback_id, cutoff)
        e_top = _id_watermark(DisputeEvent, state.dispute_event_id, cutoff)
        added: dict[int, set[dt.datetime]] = defaultdict(set)
        written = 0
        if p_top > state.prediction_id:
            _touched_by(
                Prediction.objects.filter(pk__gt=state.prediction_id, pk__lte=p_top),
                "project_id",
                "occurred_at",
                recount,
            )
        if f_top > state.feedback_id:
            if in_sql:
                written += _add_feedback_in_sql(state.feedback_id, f_top, added)
            else:
                _touched_by(
                    Feedback.objects.filter(pk__gt=state.feedback_id, pk__lte=f_top),
                    "project_id",
                    "prediction__occurred_at",
                    recount,
                )
        if e_top > state.dispute_event_id:
            _touched_by(
                DisputeEvent.objects.filter(pk__gt=state.dispute_event_id, pk__lte=e_top),
                "feedback__project_id",
                "feedback__prediction__occurred_at",
                recount,
            )
        since = state.reviews_until
        reviewed_labels = Label.objects.filter(
            updated_at__lte=cutoff, item__prediction__isnull=False
        )
        completed = QueueItem.objects.filter(completed_at__lte=cutoff, prediction__isnull=False)
        if since is not None:
            reviewed_labels = reviewed_labels.filter(updated_at__gt=since)
            completed = completed.filter(completed_at__gt=since)
        _touched_by(
            reviewed_labels,
            "item__prediction__project_id",
            "item__prediction__occurred_at",
            recount,
        )
        _touched_by(completed, "prediction__project_id", "prediction__occurred_at", recount)
        # Token ratings changed in place (thumbs down, then up): same id, so the additions
        # above never see the change; their hours are recounted (partial index on revised_at).
        revised = Feedback.objects.filter(revised_at__lte=cutoff)
        if state.revisions_until is not None:
            revised = revised.filter(revised_at__gt=state.revisions_until)
        _touched_by(revised, "project_id", "prediction__occurred_at", recount)
        written += buckets_replace(recount, (p_top, f_top))
        state.prediction_id, state.feedback_id, state.dispute_event_id = p_top, f_top, e_top
        state.reviews_until = state.revisions_until = cutoff
        state.updated_at = now
        state.save()
    hours = {(p, h) for part in (added, recount) for p, hs in part.items() for h in hs}
    return {"hours": len(hours), "rows": written}


def rollups_rebuild(
    *, project_ids: Iterable[int] | None = None, now: dt.datetime | None = None
) -> dict:
    """Recount every hour from the raw rows (all projects, or the given ones)."""
    from feedback.models import Project

    now = now or timezone.now()
    ids = (
        list(project_ids)
        if project_ids is not None
        else list(Project.objects.values_list("pk", flat=True))
    )
    written = 0
    RollupState.objects.get_or_create(pk=1)
    with transaction.atomic():
        state = RollupState.objects.select_for_update().get(pk=1)
        if connection.vendor == "postgresql":
            _bulk_settings()
        if project_ids is None:
            # Everything up to the tops is counted: the watermarks start from there.
            tops = (
                Prediction.objects.aggregate(m=Max("pk"))["m"] or 0,
                Feedback.objects.aggregate(m=Max("pk"))["m"] or 0,
            )
        else:
            # The other projects keep their watermarks: count up to them, the next step adds
            # the rest.
            tops = (state.prediction_id, state.feedback_id)
        for project_id in ids:
            MetricRollup.objects.filter(project_id=project_id).delete()
            CategoryRollup.objects.filter(project_id=project_id).delete()
            span = Prediction.objects.filter(project_id=project_id).aggregate(
                a=Min("occurred_at"), b=Max("occurred_at")
            )
            if span["a"] is None:
                continue
            start, last = _hour(span["a"]), _hour(span["b"])
            while start <= last:
                end = min(start + RUN_HOURS * HOUR, last + HOUR)
                written += _replace(project_id, start, end, tops)
                start = end
        if project_ids is None:
            state.prediction_id, state.feedback_id = tops
            state.dispute_event_id = DisputeEvent.objects.aggregate(m=Max("pk"))["m"] or 0
            state.reviews_until = now
            # A revision committed while the rebuild read may carry an earlier time: the next
            # step recounts the last lag's revised hours again (a recount is idempotent).
            state.revisions_until = now - dt.timedelta(
                seconds=settings.REDRESS_ROLLUP_LAG_SECONDS
            )
            state.updated_at = now
            state.save()
    return {"projects": len(ids), "rows": written}
