"""What people read of an audit: CSV, JSON and Markdown reports, the SVG chart, and two audits
side by side. Pure functions of stored audits (no queries beyond the audit rows given).

- CSV is long: one row per segment and figure (overall first), every number unrounded.
- JSON is the stored result with the audit's inputs around it.
- Markdown is a section to paste into a model card: scope, data, method, a table sorted with the
  worst flagged segment first, the flagged segments in words, caveats.
- The chart is plain SVG drawn on the server (the admin shows it without JavaScript): each
  segment's estimate as a bar with its interval as a whisker, the reference as a dashed line,
  flagged bars red when the segment is worse than the reference and green when it is better,
  each with the word ("worse", "better") beside it, insufficient segments named but not drawn.

Direction is never told by colour alone: every flagged figure says "worse" or "better" in the
chart, the admin's table and the Markdown report (the CSV has a ``direction`` column).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from typing import Any

from django.utils.html import escape

from . import fairness
from .models import Audit

METRIC_NAMES = {
    "error_rate": "error rate",
    "dispute_rate": "dispute rate",
    "negative_feedback_rate": "negative-feedback rate",
    "accuracy": "accuracy",
    "selection_rate": "selection rate",
    "fpr": "false positive rate",
    "fnr": "false negative rate",
}
CSV_COLUMNS = [
    "segment",
    "keys",
    "n",
    "weighted_n",
    "effective_n",
    "insufficient",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "metric_n",
    "metric_effective_n",
    "reference",
    "difference",
    "difference_ci_low",
    "difference_ci_high",
    "ratio",
    "flagged",
    "reasons",
    "direction",
]


def metric_name(name: str) -> str:
    if ":" in name:
        kind, label = name.split(":", 1)
        return f"{kind} ({label})"
    return METRIC_NAMES.get(name, name.replace("_", " "))


def metrics_of(result: dict[str, Any]) -> list[str]:
    return list((result.get("overall") or {}).get("metrics") or {})


def by_severity(segments: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Worst flagged first (largest difference in the harmful direction), then segments flagged
    only for being better, then the rest; insufficient segments last. Stable otherwise."""

    def key(segment: dict[str, Any]) -> tuple[bool, int, float]:
        severity = segment.get("severity", 0.0)  # > 0 worse, < 0 only better, 0 not flagged
        group = 0 if severity > 0 else 1 if severity < 0 else 2
        return segment["insufficient"], group, -abs(severity)

    return sorted(segments, key=key)


def audit_document(audit: Audit) -> dict[str, Any]:
    """The API's view of an audit: its inputs, state and (when done) result."""
    result = audit.result or {}
    return {
        "id": audit.pk,
        "project": audit.project.slug,
        "status": audit.status,
        "progress": audit.progress,
        "source": audit.source,
        "model_version": audit.model_version or None,
        "params": audit.params,
        "error": audit.error,
        "requested_by": audit.requested_by.get_username() if audit.requested_by else None,
        "created_at": audit.created_at.isoformat() if audit.created_at else None,
        "started_at": audit.started_at.isoformat() if audit.started_at else None,
        "finished_at": audit.finished_at.isoformat() if audit.finished_at else None,
        "scope": result.get("scope"),
        "method": result.get("method"),
        "reference": result.get("reference"),
        "overall": result.get("overall"),
        "segments": result.get("segments", []),
        "flagged": result.get("flagged", []),
        "comparisons": result.get("comparisons"),
        "caveats": result.get("caveats", []),
        "seconds": result.get("seconds"),
    }


# --- JSON and CSV ----------------------------------------------------------------------------


def render_json(audit: Audit) -> str:
    return json.dumps(audit_document(audit), indent=2, ensure_ascii=False) + "\n"


def render_csv(audit: Audit) -> str:
    result = audit.result or {}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    overall = result.get("overall") or {}
    rows = [("overall", [], overall, False)]
    rows += [(s["label"], s["keys"], s, s["insufficient"]) for s in result.get("segments", [])]
    for label, keys, group, insufficient in rows:
        for name, metric in (group.get("metrics") or {}).items():
            writer.writerow(
                [
                    label,
                    "|".join(keys),
                    group.get("n"),
                    _csv_number(group.get("weighted_n")),
                    _csv_number(group.get("effective_n")),
                    str(insufficient).lower(),
                    name,
                    _csv_number(metric.get("value")),
                    _csv_number(metric.get("ci_low")),
                    _csv_number(metric.get("ci_high")),
                    metric.get("n"),
                    _csv_number(metric.get("effective_n")),
                    _csv_number(metric.get("reference")),
                    _csv_number(metric.get("difference")),
                    _csv_number(metric.get("difference_ci_low")),
                    _csv_number(metric.get("difference_ci_high")),
                    _csv_number(metric.get("ratio")),
                    str(bool(metric.get("flagged"))).lower(),
                    "|".join(metric.get("reasons") or []),
                    metric.get("direction") or "",
                ]
            )
    return out.getvalue()


def _csv_number(value: Any) -> str:
    return "" if value is None else repr(float(value))


# --- Markdown ---------------------------------------------------------------------------------


def _rows(n: int) -> str:
    return f"{n:,} row" + ("" if n == 1 else "s")


def flags_text(segment: dict[str, Any]) -> str:
    """A segment's flagged figures with their direction in words: "error rate (worse)"."""
    metrics = segment.get("metrics") or {}
    return ", ".join(
        f"{metric_name(name)} ({(metrics.get(name) or {}).get('direction') or 'different'})"
        for name in segment.get("flags") or []
    )


def pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def points(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.1f} pts"


def interval(low: float | None, high: float | None) -> str:
    return "" if low is None or high is None else f"{100 * low:.1f}% to {100 * high:.1f}%"


def render_markdown(audit: Audit, *, metric: str = "error_rate") -> str:
    result = audit.result or {}
    scope, method = result.get("scope") or {}, result.get("method") or {}
    overall = result.get("overall") or {}
    segments = result.get("segments") or []
    names = metrics_of(result)
    metric = metric if metric in names else (names[0] if names else metric)
    confidence = method.get("confidence", 0.95)
    reference = (result.get("reference") or {}).get("label", "overall")
    keys = scope.get("segments") or []
    lines = [f"## Fairness audit: {metric_name(metric)} by {', '.join(keys)}", ""]
    when = audit.finished_at.strftime("%Y-%m-%d %H:%M UTC") if audit.finished_at else "not run"
    lines += [
        f"**Scope.** Project `{scope.get('project', audit.project.slug)}`, "
        f"{scope.get('source_label', '')}; audit #{audit.pk}, computed {when}.",
        "",
        f"**Data.** {scope.get('rows', 0):,} labeled rows (completed reviews; hidden gold "
        "checks excluded). Segments: "
        + ", ".join(f"`{k}`" for k in keys)
        + (" and their intersections" if scope.get("intersectional") else "")
        + f"; {len(segments)} segments, "
        f"{sum(1 for s in segments if s['insufficient'])} with fewer than "
        f"{method.get('min_n')} rows.",
        "",
        "**Method.** "
        + (
            "Estimates are weighted by 1/π, the inverse of each item's inclusion probability in "
            "the review sample (Hájek), so they describe the sampled population rather than the "
            "sample; "
            if method.get("weighted")
            else "Unweighted shares of the audited rows; "
        )
        + f"{confidence:.0%} Wilson intervals on Kish's effective sample size; differences "
        f"against {reference}"
        + (" (all audited rows, the segment included)" if reference == "overall" else "")
        + " with Newcombe's hybrid score interval. A figure is flagged when the interval of its "
        f"difference excludes zero and the difference is at least {method.get('tolerance')} "
        f"({100 * method.get('tolerance', 0):.0f} points), or when a selection rate is under "
        f"{fairness.FOUR_FIFTHS:.0%} of the reference's. Segments with fewer than "
        f"{method.get('min_n')} rows are not estimated and never flagged.",
        "",
    ]
    om = (overall.get("metrics") or {}).get(metric) or {}
    if om.get("value") is None:
        lines += [
            f"**Overall.** No {metric_name(metric)} to estimate: the audit read "
            f"{_rows(om.get('n') or scope.get('rows') or 0)} with a figure for it.",
            "",
        ]
    else:
        lines += [
            f"**Overall.** {metric_name(metric).capitalize()} {pct(om.get('value'))} "
            f"({confidence:.0%} CI {interval(om.get('ci_low'), om.get('ci_high'))}; "
            f"n = {om.get('n', 0):,}, effective n = {om.get('effective_n') or 0:,.0f}).",
            "",
        ]
    extra = [m for m in ("selection_rate", "fpr", "fnr") if m in names and m != metric]
    header = [
        "segment",
        "n",
        "eff. n",
        f"{metric_name(metric)} ({confidence:.0%} CI)",
        "Δ vs " + reference,
        "ratio",
    ]
    header += [metric_name(m) for m in extra] + ["flagged"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("| " + " | ".join(["---"] + ["---:"] * (len(header) - 2) + ["---"]) + " |")
    for segment in by_severity(segments):
        m = segment["metrics"].get(metric) or {}
        if segment["insufficient"]:
            cells = [f"`{segment['label']}`", f"{segment['n']:,}", "", "insufficient", "", ""]
            cells += [""] * len(extra) + [""]
        else:
            cells = [
                f"`{segment['label']}`",
                f"{segment['n']:,}",
                f"{segment['effective_n']:,.0f}",
                f"{pct(m.get('value'))} ({interval(m.get('ci_low'), m.get('ci_high'))})",
                points(m.get("difference")),
                "-" if m.get("ratio") is None else f"{m['ratio']:.2f}",
            ]
            cells += [pct(segment["metrics"].get(e, {}).get("value")) for e in extra]
            cells.append(flags_text(segment))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "**Flagged segments.**", ""]
    flagged = result.get("flagged") or []
    if not flagged and not scope.get("rows"):
        lines.append("Nothing to flag: the audit read no labeled rows.")
    elif not flagged:
        lines.append(f"No segment differs from {reference} by a margin both real and large.")
    # One line per segment (worst first, as in result["flagged"]), its flagged figures after.
    per_segment: dict[str, list[dict[str, Any]]] = {}
    for flag in flagged:
        per_segment.setdefault(flag["label"], []).append(flag)
    for label, flags in per_segment.items():
        figures = []
        for flag in flags:
            why = []
            if "difference" in flag["reasons"]:
                why.append(
                    f"{points(flag['difference'])}, CI {points(flag['difference_ci_low'])} to "
                    f"{points(flag['difference_ci_high'])}"
                )
            if "four_fifths" in flag["reasons"]:
                why.append(f"ratio {flag['ratio']:.2f} < {fairness.FOUR_FIFTHS}")
            figures.append(
                f"**{flag['direction'] or 'different'}**: {metric_name(flag['metric'])} "
                f"{pct(flag['value'])} against {pct(flag['reference'])} ({'; '.join(why)})"
            )
        lines.append(f"- `{label}` (n = {flags[0]['n']:,}): " + "; ".join(figures) + ".")
    lines += ["", "**Caveats.**", ""]
    lines += [f"- {caveat}" for caveat in result.get("caveats") or []] or ["- None recorded."]
    return "\n".join(lines) + "\n"


# --- the chart --------------------------------------------------------------------------------

ROW_HEIGHT = 22
LABEL_WIDTH = 240
PLOT_WIDTH = 460
RIGHT_MARGIN = 120
TOP = 34
RED, GREY, BLUE = "#ba2121", "#999999", "#417690"
GREEN, NEUTRAL = "#2e7d32", "#8fa5b3"  # better than the reference; not flagged
DIRECTION_COLOURS = {"worse": RED, "better": GREEN}
BOLD = ' font-weight="bold"'


def chart_svg(result: dict[str, Any], *, metric: str = "error_rate") -> str:
    """A horizontal interval chart of one figure for every segment (see the module doc)."""
    segments = result.get("segments") or []
    reference_label = (result.get("reference") or {}).get("label", "overall")
    reference = None
    highest = 0.0
    for segment in segments:
        m = segment["metrics"].get(metric) or {}
        if m.get("reference") is not None:
            reference = m["reference"]
        highest = max(highest, m.get("ci_high") or 0.0, m.get("value") or 0.0)
    if reference is None and reference_label == "overall":
        reference = (
            ((result.get("overall") or {}).get("metrics") or {}).get(metric, {}).get("value")
        )
    highest = max(highest, reference or 0.0)
    # Axis to the next tenth above everything drawn (at most 1): small rates stay readable.
    top = min(1.0, max(0.1, math.ceil(highest * 10 + 1e-9) / 10))

    def x(value: float) -> float:
        return round(LABEL_WIDTH + PLOT_WIDTH * min(value, top) / top, 2)

    height = TOP + ROW_HEIGHT * max(1, len(segments)) + 30
    width = LABEL_WIDTH + PLOT_WIDTH + RIGHT_MARGIN
    title = f"{metric_name(metric)} by segment"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
        'font-family="sans-serif" font-size="12" class="audit-chart">',
        f"<title>{escape(title)}</title>",
        f'<text x="{LABEL_WIDTH}" y="14" font-weight="bold">{escape(title.capitalize())}</text>',
    ]
    # Axis ticks and gridlines every tenth (every 0.02 under 0.2).
    step = 0.02 if top <= 0.2 else 0.1
    ticks = [round(i * step, 4) for i in range(round(top / step) + 1)]
    bottom = TOP + ROW_HEIGHT * max(1, len(segments))
    for tick in ticks:
        parts.append(
            f'<line x1="{x(tick)}" y1="{TOP - 4}" x2="{x(tick)}" y2="{bottom}" '
            'stroke="#e0e0e0" stroke-width="1"/>'
        )
        parts.append(
            f'<text x="{x(tick)}" y="{bottom + 14}" text-anchor="middle" fill="#666">'
            f"{100 * tick:.0f}%</text>"
        )
    for row, segment in enumerate(segments):
        m = segment["metrics"].get(metric) or {}
        y = TOP + row * ROW_HEIGHT
        mid = y + ROW_HEIGHT / 2
        label = escape(segment["label"])
        flagged = bool(m.get("flagged"))
        direction = m.get("direction") if flagged else None
        classes = (
            "segment"
            + (f" flagged {direction or ''}".rstrip() if flagged else "")
            + (" insufficient" if m.get("value") is None else "")
        )
        parts.append(f'<g class="{classes}" data-segment="{label}">')
        parts.append(f'<text x="{LABEL_WIDTH - 8}" y="{mid + 4}" text-anchor="end">{label}</text>')
        if m.get("value") is None:
            parts.append(f"<title>{label}: insufficient (n = {segment['n']})</title>")
            parts.append(
                f'<text x="{LABEL_WIDTH + 4}" y="{mid + 4}" fill="{GREY}" font-style="italic">'
                f"insufficient (n = {segment['n']})</text></g>"
            )
            continue
        value, low, high = m["value"], m["ci_low"], m["ci_high"]
        colour = DIRECTION_COLOURS.get(direction or "", RED) if flagged else NEUTRAL
        summary = f"{label}: {pct(value)} ({interval(low, high)})"
        if m.get("difference") is not None:
            summary += f", {points(m['difference'])} vs {escape(reference_label)}"
        if flagged:
            summary += f", flagged: {direction or 'different'}"
        parts.append(f"<title>{summary}</title>")
        parts.append(
            f'<rect class="bar" x="{LABEL_WIDTH}" y="{y + 5}" width="{x(value) - LABEL_WIDTH}" '
            f'height="{ROW_HEIGHT - 10}" fill="{colour}" fill-opacity="0.55"/>'
        )
        parts.append(
            f'<g class="whisker" stroke="#222" stroke-width="1.5">'
            f'<line x1="{x(low)}" y1="{mid}" x2="{x(high)}" y2="{mid}"/>'
            f'<line x1="{x(low)}" y1="{mid - 5}" x2="{x(low)}" y2="{mid + 5}"/>'
            f'<line x1="{x(high)}" y1="{mid - 5}" x2="{x(high)}" y2="{mid + 5}"/></g>'
        )
        parts.append(f'<circle cx="{x(value)}" cy="{mid}" r="3" fill="#222"/>')
        arrow = {"worse": "▲ worse", "better": "▼ better"}.get(direction or "", "⚑ flagged")
        note = f"{pct(value)}" + (f" {arrow}" if flagged else "")
        parts.append(
            f'<text x="{LABEL_WIDTH + PLOT_WIDTH + 6}" y="{mid + 4}" '
            f'fill="{colour if flagged else "#333"}"'
            f"{BOLD if flagged else ''}>{note}</text></g>"
        )
    if reference is not None:
        parts.append(
            f'<g class="reference"><line x1="{x(reference)}" y1="{TOP - 8}" x2="{x(reference)}" '
            f'y2="{bottom}" stroke="#000" stroke-width="1.5" stroke-dasharray="5,3"/>'
            f'<text x="{x(reference)}" y="{TOP - 10}" text-anchor="middle" fill="#000">'
            f"{escape(reference_label)} {pct(reference)}</text></g>"
        )
    parts.append("</svg>")
    return "\n".join(parts)


# --- two audits side by side ------------------------------------------------------------------


def audits_compare(a: Audit, b: Audit, *, metric: str = "error_rate") -> dict[str, Any]:
    """Segment by segment, ``metric`` in audit ``a`` and in audit ``b`` and the change (b - a),
    with Newcombe's interval for the change (treating the two audits as independent samples:
    approximate when they share items) and what differs between their inputs."""
    ra, rb = a.result or {}, b.result or {}
    # A segment is its set of key=value pairs: "locale=de, age=25-44" in one audit is
    # "age=25-44, locale=de" in an audit that listed its keys in another order.
    segments_a = {_segment_key(s): s for s in ra.get("segments") or []}
    segments_b = {_segment_key(s): s for s in rb.get("segments") or []}
    keys = list(segments_a) + [key for key in segments_b if key not in segments_a]
    rows = [_compare_row("overall", ra.get("overall"), rb.get("overall"), metric)]
    rows += [
        _compare_row(
            (segments_a.get(key) or segments_b[key])["label"],
            segments_a.get(key),
            segments_b.get(key),
            metric,
        )
        for key in keys
    ]
    differences = []
    for name in (
        "segments",
        "intersectional",
        "weighted",
        "min_n",
        "confidence",
        "reference",
        "positive_label",
    ):
        x, y = a.params.get(name), b.params.get(name)
        if name == "segments":  # the same keys in another order are the same segments
            x, y = sorted(x or []), sorted(y or [])
        if x != y:
            differences.append(f"{name}: {_param_text(x)} in a, {_param_text(y)} in b")
    if (a.queue_id, a.export_id, a.gold_version_id) != (b.queue_id, b.export_id, b.gold_version_id):
        differences.append("the audits read different sources")
    return {
        "a": a.pk,
        "b": b.pk,
        "metric": metric,
        "model_versions": [a.model_version or None, b.model_version or None],
        "rows": rows,
        "input_differences": differences,
    }


def _segment_key(segment: dict[str, Any]) -> Any:
    values = segment.get("segment")
    return tuple(sorted(values.items())) if isinstance(values, dict) else segment["label"]


def _param_text(value: Any) -> str:
    """An audit parameter as people write it (never a Python repr)."""
    if value is None or value == "" or value == []:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in sorted(value.items()))
    return str(value)


def _compare_row(label: str, ga: dict | None, gb: dict | None, metric: str) -> dict[str, Any]:
    ma = ((ga or {}).get("metrics") or {}).get(metric) or {}
    mb = ((gb or {}).get("metrics") or {}).get(metric) or {}
    row: dict[str, Any] = {
        "label": label,
        "a": {k: ma.get(k) for k in ("value", "ci_low", "ci_high", "n", "flagged")},
        "b": {k: mb.get(k) for k in ("value", "ci_low", "ci_high", "n", "flagged")},
        "change": None,
        "change_ci_low": None,
        "change_ci_high": None,
    }
    if ma.get("value") is not None and mb.get("value") is not None:
        row["change"] = mb["value"] - ma["value"]
        row["change_ci_low"], row["change_ci_high"] = fairness.newcombe_interval(
            mb["value"], (mb["ci_low"], mb["ci_high"]), ma["value"], (ma["ci_low"], ma["ci_high"])
        )
    return row
