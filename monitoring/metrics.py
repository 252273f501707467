"""Rates from rollups (never from raw rows): series by hour, day, model version or segment
value, and the comparison of two model versions."""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict

from django.db import connection
from django.db.models import Sum
from django.db.models.functions import TruncDay

from feedback.errors import InvalidInput

from .models import CategoryRollup, MetricRollup
from .stats import interval, newcombe, two_proportion_p

METRICS = ("complaint_rate", "dispute_rate", "upheld_rate", "reviewer_error_rate")
CATEGORY_PREFIX = "category_rate:"
CATEGORY_RE = re.compile(r"^[-a-zA-Z0-9_]{1,64}$")
# The rollup counts each metric reads: (numerator fields, denominator fields).
PARTS = {
    "complaint_rate": (("ratings_negative", "reports"), ("predictions",)),
    "dispute_rate": (("disputes",), ("predictions",)),
    "upheld_rate": (("disputes_upheld",), ("disputes_upheld", "disputes_rejected")),
    "reviewer_error_rate": (("weight_incorrect",), ("weight_incorrect", "weight_correct")),
}
WEIGHT2 = ("weight2_incorrect", "weight2_correct")


def metric_check(metric: object, field: str = "metric") -> str:
    if isinstance(metric, str):
        if metric in METRICS:
            return metric
        if metric.startswith(CATEGORY_PREFIX) and CATEGORY_RE.match(metric[len(CATEGORY_PREFIX) :]):
            return metric
    raise InvalidInput.one(
        field,
        "invalid_choice",
        f"One of {', '.join(METRICS)} or {CATEGORY_PREFIX}<category slug>.",
    )


def _rate(metric: str, sums: dict) -> dict:
    """numerator, denominator, value, ci_low, ci_high from summed rollup counts."""
    if metric.startswith(CATEGORY_PREFIX):
        numerator, denominator = sums.get("category", 0) or 0, sums.get("predictions", 0) or 0
        return {
            "numerator": numerator,
            "denominator": denominator,
            **interval(numerator, denominator),
        }
    top, bottom = PARTS[metric]
    numerator = sum(sums.get(f) or 0 for f in top)
    denominator = sum(sums.get(f) or 0 for f in bottom)
    n_effective = None
    if metric == "reviewer_error_rate":
        squares = sum(sums.get(f) or 0 for f in WEIGHT2)
        n_effective = denominator * denominator / squares if squares else 0
    return {
        "numerator": numerator,
        "denominator": denominator,
        **interval(numerator, denominator, n_effective),
    }


def _fields(metric: str) -> set[str]:
    if metric.startswith(CATEGORY_PREFIX):
        return {"predictions"}
    top, bottom = PARTS[metric]
    return {*top, *bottom, *(WEIGHT2 if metric == "reviewer_error_rate" else ())}


def _group_key(by: str):
    if by == "hour":
        return "hour"
    if by == "day":
        return "day"
    if by == "model_version":
        return "model_version"
    return "segment_value"


def _rows(model, *, project_id, by, model_version, start, end, segment):
    """Rollup rows of one segment dimension: the project-wide one, or the named key's."""
    rows = model.objects.filter(project_id=project_id)
    if by.startswith("segment."):
        rows = rows.filter(segment_key=by[len("segment.") :])
        if segment:
            rows = rows.filter(segment_value=segment[1])
    elif segment:
        rows = rows.filter(segment_key=segment[0], segment_value=segment[1])
    else:
        # The project-wide rows (their value is "" too): all four leading columns of the
        # unique index, so a version's series is one index range.
        rows = rows.filter(segment_key="", segment_value="")
    if model_version is not None:
        rows = rows.filter(model_version=model_version)
    if start is not None:
        rows = rows.filter(hour__gte=start)
    if end is not None:
        rows = rows.filter(hour__lt=end)
    if by == "day":
        rows = rows.annotate(day=TruncDay("hour"))
    return rows


def _sums(metric, **query) -> dict:
    """{group key: {count field: sum}} for the query."""
    by = query["by"]
    group = _group_key(by)
    out: dict = defaultdict(dict)
    fields = _fields(metric)
    rows = (
        _rows(MetricRollup, **query)
        .values(group)
        .annotate(**{f: Sum(f) for f in fields})
        .order_by()
    )
    for row in rows:
        out[row.pop(group)].update(row)
    if metric.startswith(CATEGORY_PREFIX):
        slug = metric[len(CATEGORY_PREFIX) :]
        rows = (
            _rows(CategoryRollup, **query)
            .filter(category=slug)
            .values(group)
            .annotate(category=Sum("feedback"))
            .order_by()
        )
        for row in rows:
            out[row.pop(group)]["category"] = row["category"]
    return out


def _key(value) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, dt.date):
        return value.strftime("%Y-%m-%dT00:00:00Z")
    return str(value)


def metric_series(
    *,
    project_id: int,
    metric: str,
    by: str,
    model_version: str | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    segment: tuple[str, str] | None = None,
) -> dict:
    sums = _sums(
        metric,
        project_id=project_id,
        by=by,
        model_version=model_version,
        start=start,
        end=end,
        segment=segment,
    )
    series = [{"key": _key(k), **_rate(metric, s)} for k, s in sums.items()]
    series.sort(key=lambda item: item["key"])
    return {"metric": metric, "series": series}


def metric_total(
    *,
    project_id: int,
    metric: str,
    model_version: str | None,
    start,
    end,
    segment: tuple[str, str] | None = None,
) -> dict:
    """One figure over the whole window."""
    sums = _sums(
        metric,
        project_id=project_id,
        by="model_version",
        model_version=model_version,
        start=start,
        end=end,
        segment=segment,
    )
    total: dict = defaultdict(float)
    for s in sums.values():
        for name, v in s.items():
            total[name] += v or 0
    return _rate(metric, total)


def metric_totals(specs: list[dict]) -> list[dict]:
    """``metric_total`` of each spec (its keyword arguments), for many windows at once: an
    alert round's 200 rules are two or three grouped queries instead of 400 (PostgreSQL; the
    figures are the same, summed in one place instead of per version)."""
    if connection.vendor != "postgresql":
        return [metric_total(**spec) for spec in specs]
    sums: list[dict] = [{} for _ in specs]
    for with_version in (True, False):
        chosen = [
            i for i, spec in enumerate(specs) if (spec["model_version"] is not None) == with_version
        ]
        if not chosen:
            continue
        for i, row in _grouped_sums(MetricRollup.COUNTS, chosen, specs, with_version, False):
            sums[i].update(row)
        chosen = [i for i in chosen if specs[i]["metric"].startswith(CATEGORY_PREFIX)]
        if chosen:
            for i, row in _grouped_sums(("feedback",), chosen, specs, with_version, True):
                sums[i]["category"] = row["feedback"]
    return [_rate(spec["metric"], s) for spec, s in zip(specs, sums, strict=True)]


def _grouped_sums(fields, chosen, specs, with_version: bool, category: bool):
    """(spec index, {field: sum}) of the rollup rows in each chosen spec's window: the window
    list is unnested and joined to the rollups by their unique index (by version) or by the
    hour index (all versions)."""
    table = CategoryRollup._meta.db_table if category else MetricRollup._meta.db_table
    params: dict = {"k": chosen, "p": [], "sk": [], "sv": [], "mv": [], "s": [], "e": [], "c": []}
    for i in chosen:
        spec = specs[i]
        key, value = spec.get("segment") or ("", "")
        params["p"].append(spec["project_id"])
        params["sk"].append(key)
        params["sv"].append(value)
        params["mv"].append(spec["model_version"] or "")
        params["s"].append(spec["start"])
        params["e"].append(spec["end"])
        params["c"].append(spec["metric"][len(CATEGORY_PREFIX) :] if category else "")
    conditions = [
        "r.project_id = w.p",
        "r.segment_key = w.sk",
        "r.segment_value = w.sv",
        "r.hour >= w.s",
        "r.hour < w.e",
    ]
    if with_version:
        conditions.append("r.model_version = w.mv")
    if category:
        conditions.append("r.category = w.c")
    columns = ", ".join(f"sum(r.{f})" for f in fields)
    sql = f"""
        SELECT w.k, {columns}
        FROM unnest(%(k)s::int[], %(p)s::bigint[], %(sk)s::text[], %(sv)s::text[],
                    %(mv)s::text[], %(s)s::timestamptz[], %(e)s::timestamptz[], %(c)s::text[])
             AS w(k, p, sk, sv, mv, s, e, c)
        JOIN {table} r ON {" AND ".join(conditions)}
        GROUP BY w.k"""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for k, *values in cursor.fetchall():
            yield k, {f: float(v or 0) for f, v in zip(fields, values, strict=True)}


def metric_compare(
    *,
    project_id: int,
    metric: str,
    a: str,
    b: str,
    start,
    end,
    segment: tuple[str, str] | None = None,
) -> dict:
    """b against a: each rate, the difference b - a, Newcombe's interval, the z-test p."""
    ra = metric_total(
        project_id=project_id, metric=metric, model_version=a, start=start, end=end, segment=segment
    )
    rb = metric_total(
        project_id=project_id, metric=metric, model_version=b, start=start, end=end, segment=segment
    )
    na, nb = _n(metric, ra), _n(metric, rb)
    xa, xb = _x(ra, na), _x(rb, nb)
    difference = None
    if ra["value"] is not None and rb["value"] is not None:
        difference = rb["value"] - ra["value"]
    low, high = newcombe(xa, na, xb, nb)
    return {
        "a": {"model_version": a, **ra},
        "b": {"model_version": b, **rb},
        "difference": difference,
        "difference_ci_low": low,
        "difference_ci_high": high,
        "p_value": two_proportion_p(xa, na, xb, nb),
    }


def _n(metric: str, rate: dict) -> float:
    return float(rate["denominator"] or 0)


def _x(rate: dict, n: float) -> float:
    return min(float(rate["numerator"] or 0), n)
