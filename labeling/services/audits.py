"""Segment audits: validate a request, store it, compute it in SQL, keep the result.

``audit_create`` takes a request checked by ``labeling.payloads.audits.audit_request`` (every
refusal names its field: ``segments[0]``, ``min_n``, ``source.queue``…), resolves its source in
the project, stores the audit with its inputs and either computes it at
once (a source of at most ``REDRESS_AUDIT_INLINE_ROWS`` rows: the caller gets the result) or
enqueues ``audit_run_task`` after commit. ``audit_run`` claims a pending audit with a
conditional update (a duplicate delivery does nothing), aggregates in the database
(``labeling.selectors.audits``), turns the sums into estimates, intervals and flags
(``labeling.fairness``) and stores the result in one transaction.

Method, for the reader of a result (also written into every result's ``method``):

* rows: completed, non-gold items of the queue (or export) with their prediction; for a gold
  version, gold items matched to the model version's predictions (see the selector);
* figures per segment: error rate (incorrect among decided verdicts), dispute rate and
  negative-feedback rate (share of predictions with a dispute / with a -1 rating, a report or
  a dispute), and with label choices accuracy, per-class precision and recall, and for
  ``positive_label`` the FPR, FNR and selection rate;
* Hájek estimates with weights 1/π (or 1 when ``weighted`` is false), Wilson intervals on
  Kish's effective n, Newcombe's interval for differences; ``min_n`` suppresses and never
  flags; the reference is every audited row (the segment included) or a named segment.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import OperationalError, transaction
from django.db.models import F
from django.utils import timezone

from feedback.errors import InvalidInput, NotFound
from feedback.models import Project

from .. import fairness
from ..enqueue import enqueue_after_commit
from ..models import Audit, Export, GoldSet, Queue, QueueItem
from ..payloads.audits import AuditRequest
from ..selectors.audits import (
    AuditSource,
    GroupSums,
    audit_aggregate,
    audit_observed_labels,
    audit_rows_count,
    gold_items_count,
    grouping_sets,
    metric_definitions,
)
from . import notifications

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]

MAX_CLASSES = 50
# Figures where a higher value is the worse outcome; for the others (accuracy, precision,
# recall, selection rate with the positive label as the favourable outcome) lower is worse.
HIGHER_IS_WORSE = {"error_rate", "dispute_rate", "negative_feedback_rate", "fpr", "fnr"}


def inline_rows_limit() -> int:
    return int(getattr(settings, "REDRESS_AUDIT_INLINE_ROWS", 20_000))


# --- sources ---------------------------------------------------------------------------------


def _export_items_sql(export: Export) -> tuple[str, tuple[Any, ...]]:
    try:
        from ..selectors.exports import export_items
    except ImportError as exc:
        raise InvalidInput.one(
            "source.export", "unavailable", "Audits of exports are not available yet."
        ) from exc
    spec = export.spec or {}
    items = export_items(
        project=export.project, queue=export.queue, filter=spec.get("filter") or {}
    )
    sql, params = items.values("pk").query.sql_with_params()
    return sql, tuple(params)


def _resolve_source(
    *, project: Project, request: dict[str, Any]
) -> tuple[dict[str, Any], AuditSource, list[str] | None]:
    """The audit's foreign keys, the selector's source, and the declared classes (None when
    they are to be read from the rows: gold sets)."""
    kind, model_version = request["kind"], request.get("model_version")
    if kind == "queue":
        queue = Queue.objects.filter(project=project, pk=request["queue"]).first()
        if queue is None:
            raise NotFound.one(
                "source.queue", "not_found", f"No queue {request['queue']} in {project.slug}."
            )
        source = AuditSource(project_id=project.pk, queue_id=queue.pk, model_version=model_version)
        return {"queue": queue}, source, list(queue.label_choices or [])
    if kind == "export":
        export = Export.objects.filter(project=project, pk=request["export"]).first()
        if export is None:
            raise NotFound.one(
                "source.export", "not_found", f"No export {request['export']} in {project.slug}."
            )
        if export.gold_version_id is not None:
            raise InvalidInput.one(
                "source.export",
                "gold_export",
                "This export is a gold-set snapshot, which carries no model predictions; audit "
                'the gold set itself: {"goldset": slug, "version": n, "model_version": ...}.',
            )
        source = AuditSource(
            project_id=project.pk, items_sql=_export_items_sql(export), model_version=model_version
        )
        if export.queue is not None:
            classes = list(export.queue.label_choices or [])
        else:  # a project-wide export: the classes of every queue of the project, in order
            classes = []
            for choices in Queue.objects.filter(project=project).values_list(
                "label_choices", flat=True
            ):
                classes += [c for c in choices or [] if c not in classes]
        return {"export": export}, source, classes
    gold_set = GoldSet.objects.filter(project=project, slug=request["goldset"]).first()
    if gold_set is None:
        raise NotFound.one(
            "source.goldset", "not_found", f"No gold set {request['goldset']!r} in {project.slug}."
        )
    version = gold_set.versions.filter(number=request["version"]).first()
    if version is None:
        raise NotFound.one(
            "source.version", "not_found", f"{gold_set} has no version {request['version']}."
        )
    if version.status != version.Status.PUBLISHED:
        # A draft can still change, so an audit of it could not be reproduced or compared.
        raise InvalidInput.one(
            "source.version", "not_published", f"Version {version.number} is a draft; publish it."
        )
    source = AuditSource(
        project_id=project.pk, gold_version_id=version.pk, model_version=model_version
    )
    return {"gold_version": version}, source, None


def _source_of(audit: Audit) -> AuditSource:
    if audit.gold_version_id is not None:
        return AuditSource(
            project_id=audit.project_id,
            gold_version_id=audit.gold_version_id,
            model_version=audit.model_version or None,
        )
    if audit.export_id is not None:
        return AuditSource(
            project_id=audit.project_id,
            items_sql=_export_items_sql(audit.export),
            model_version=audit.model_version or None,
        )
    if audit.queue_id is not None:
        return AuditSource(
            project_id=audit.project_id,
            queue_id=audit.queue_id,
            model_version=audit.model_version or None,
        )
    raise InvalidInput.one("source", "gone", "The audited source was deleted.")


# --- create and run --------------------------------------------------------------------------


def audit_create(
    *,
    project: Project,
    request: AuditRequest,
    actor: AbstractBaseUser | None = None,
    run: str = "auto",
) -> Audit:
    """Store an audit (``request``: checked by ``labeling.payloads.audits.audit_request``) and
    see that it is computed. 404 naming ``source.<kind>`` for a source not in the project; 400
    for a positive label that is not one of the source's classes.

    ``run``: ``"auto"`` computes it here when the source has at most
    ``REDRESS_AUDIT_INLINE_ROWS`` rows and hands it to a worker otherwise; ``"now"`` and
    ``"worker"`` force either; ``"caller"`` only stores it pending, for a caller that runs
    ``audit_run`` itself (``manage.py audit``, to show progress). Returns the audit: ``done`` (or
    ``failed``) when computed here, ``pending`` otherwise (a worker's is enqueued after commit;
    ``audits_recover`` re-enqueues what a broker outage lost).
    """
    if run not in ("auto", "now", "worker", "caller"):
        raise ValueError(f"run must be auto, now, worker or caller, not {run!r}")
    params = dict(request.params)
    links, source, classes = _resolve_source(project=project, request=request.source)
    if classes is None:
        classes = audit_observed_labels(source=source)
    label = params["positive_label"]
    if label is not None and not classes:
        raise InvalidInput.one(
            "positive_label",
            "no_labels",
            "This source has no label choices, so there is no positive class to audit.",
        )
    if label is not None and label not in classes:
        raise InvalidInput.one(
            "positive_label", "invalid_choice", f"One of the source's labels: {', '.join(classes)}."
        )
    params["classes"] = classes[:MAX_CLASSES]
    if run == "auto":
        run = "now" if audit_rows_count(source=source) <= inline_rows_limit() else "worker"
    stored_source = {k: v for k, v in request.source.items() if k != "kind"}
    with transaction.atomic():
        audit = Audit.objects.create(
            project=project,
            source=stored_source,
            model_version=source.model_version or "",
            params=params,
            requested_by=actor
            if actor is not None and actor.is_authenticated and actor.pk
            else None,
            **links,
        )
        if run == "worker":
            enqueue_after_commit("audit_run_task", audit.pk)
    if run == "now":
        return audit_run(audit_id=audit.pk)
    return audit


def audit_run(*, audit_id: int, on_progress: Progress | None = None) -> Audit:
    """Compute a pending audit. Idempotent: an audit that is not pending is returned as is.

    A database error puts the audit back to pending and propagates (the task retries); any
    other error fails the audit with the message.
    """
    claimed = Audit.objects.filter(pk=audit_id, status=Audit.Status.PENDING).update(
        status=Audit.Status.RUNNING,
        started_at=timezone.now(),
        progress=0.0,
        error="",
        attempts=F("attempts") + 1,
    )
    audit = Audit.objects.select_related("project", "queue", "export", "gold_version").get(
        pk=audit_id
    )
    if not claimed:
        return audit
    # Every later write is keyed on this attempt: once audits_recover hands the run back, a
    # late write of this attempt finds nothing to update.
    mine = Audit.objects.filter(pk=audit_id, status=Audit.Status.RUNNING, attempts=audit.attempts)

    def progress(fraction: float, stage: str) -> None:
        mine.update(progress=round(fraction, 3))
        if on_progress is not None:
            on_progress(fraction, stage)

    try:
        result = audit_compute(audit=audit, on_progress=progress)
    except OperationalError:
        mine.update(status=Audit.Status.PENDING, started_at=None)
        raise
    except Exception as exc:  # recorded on the audit, never lost in a worker log only
        log.exception("audit %s failed", audit_id)
        mine.update(
            status=Audit.Status.FAILED, error=str(exc) or repr(exc), finished_at=timezone.now()
        )
        audit.refresh_from_db()
        return audit
    with transaction.atomic():
        mine.update(
            status=Audit.Status.DONE, result=result, progress=1.0, finished_at=timezone.now()
        )
        notifications.audit_finished_emit(audit_id=audit_id)
    if on_progress is not None:
        on_progress(1.0, "done")
    audit.refresh_from_db()
    return audit


def audits_recover(*, stale_after_seconds: int) -> int:
    """Re-enqueue audits whose message was lost (``pending`` too long) or whose worker died
    (``running`` past ``REDRESS_AUDIT_STALE_SECONDS``). Keyed on the attempt, as
    ``exports_recover`` is: a run that finishes meanwhile keeps its result."""
    cutoff = timezone.now() - timezone.timedelta(seconds=stale_after_seconds)
    pending = list(
        Audit.objects.filter(status=Audit.Status.PENDING, created_at__lt=cutoff).values_list(
            "pk", flat=True
        )
    )
    stale = list(
        Audit.objects.filter(status=Audit.Status.RUNNING, started_at__lt=cutoff).values_list(
            "pk", "attempts"
        )
    )
    handed_back = [
        pk
        for pk, attempts in stale
        if Audit.objects.filter(pk=pk, status=Audit.Status.RUNNING, attempts=attempts).update(
            status=Audit.Status.PENDING, started_at=None
        )
    ]
    for audit_id in pending + handed_back:
        enqueue_after_commit("audit_run_task", audit_id)
    return len(pending) + len(handed_back)


# --- the computation -------------------------------------------------------------------------


def audit_compute(*, audit: Audit, on_progress: Progress | None = None) -> dict[str, Any]:
    """The result document of an audit (read-only: stores nothing)."""
    report = on_progress or (lambda fraction, stage: None)
    started = time.perf_counter()
    params = audit.params
    keys: list[str] = params["segments"]
    classes: list[str] = params.get("classes") or []
    positive = params.get("positive_label") if classes else None
    source = _source_of(audit)
    report(0.02, "reading the source")
    metrics = metric_definitions(classes=classes, positive_label=positive)
    sets = grouping_sets(keys, intersectional=params["intersectional"])
    groups = audit_aggregate(
        source=source,
        keys=keys,
        sets=sets,
        metrics=metrics,
        weighted=params["weighted"] and not source.is_gold,
        labels=bool(classes),
        on_progress=report,
    )
    result = _result(audit, groups, [m.name for m in metrics], sets)
    result["scope"]["classes"] = classes
    result["caveats"] = _caveats(audit, source, result) + result["caveats"]
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result


def _result(
    audit: Audit, groups: list[GroupSums], names: list[str], sets: list[tuple[str, ...]]
) -> dict[str, Any]:
    params = audit.params
    min_n, confidence, tolerance = params["min_n"], params["confidence"], params["tolerance"]
    keys = params["segments"]
    overall_group = next((g for g in groups if not g.keys), None) or GroupSums((), (), 0, 0.0, 0.0)

    def estimates(group: GroupSums) -> dict[str, fairness.Estimate]:
        return {
            name: fairness.estimate(
                group.metrics.get(name) or fairness.Sums(0, 0.0, 0.0, 0, 0.0),
                confidence=confidence,
                min_n=min_n,
            )
            for name in names
        }

    caveats: list[str] = []
    overall = estimates(overall_group)
    reference_spec = params["reference"]
    if reference_spec == "overall":
        reference, reference_label = overall, "overall"
    else:
        wanted_keys = tuple(k for k in keys if k in reference_spec)
        wanted_values = tuple(str(reference_spec[k]) for k in wanted_keys)
        found = next(
            (g for g in groups if g.keys == wanted_keys and g.values == wanted_values), None
        )
        reference_label = _label(wanted_keys, wanted_values)
        if found is None:
            caveats.append(f"The reference segment {reference_label} has no rows: no comparisons.")
            reference = estimates(GroupSums(wanted_keys, wanted_values, 0, 0.0, 0.0))
        else:
            reference = estimates(found)
            if found.n < min_n:
                caveats.append(
                    f"The reference segment {reference_label} has {found.n} rows, under min_n "
                    f"({min_n}): no comparisons."
                )

    order = {group_set: position for position, group_set in enumerate(sets)}
    segments = []
    flagged: list[dict[str, Any]] = []
    for group in sorted((g for g in groups if g.keys), key=lambda g: (order[g.keys], g.values)):
        segment_estimates = estimates(group)
        metrics: dict[str, Any] = {}
        for name in names:
            own = segment_estimates[name]
            comparison = fairness.compare(
                own,
                reference[name],
                tolerance=tolerance,
                four_fifths=name == "selection_rate",
            )
            entry = {
                **_estimate_json(own),
                "reference": comparison.reference,
                "difference": comparison.difference,
                "difference_ci_low": comparison.diff_low,
                "difference_ci_high": comparison.diff_high,
                "ratio": comparison.ratio,
                "flagged": comparison.flagged,
                "reasons": list(comparison.reasons),
                "direction": _direction(name, comparison.difference),
            }
            metrics[name] = entry
            if comparison.flagged:
                flagged.append(
                    {
                        "segment": dict(zip(group.keys, group.values, strict=True)),
                        "label": _label(group.keys, group.values),
                        "metric": name,
                        "value": own.value,
                        "ci_low": own.ci_low,
                        "ci_high": own.ci_high,
                        "reference": comparison.reference,
                        "difference": comparison.difference,
                        "difference_ci_low": comparison.diff_low,
                        "difference_ci_high": comparison.diff_high,
                        "ratio": comparison.ratio,
                        "reasons": list(comparison.reasons),
                        "direction": entry["direction"],
                        "n": own.n,
                    }
                )
        flags = [name for name in names if metrics[name]["flagged"]]
        segments.append(
            {
                "segment": dict(zip(group.keys, group.values, strict=True)),
                "label": _label(group.keys, group.values),
                "keys": list(group.keys),
                "n": group.n,
                "weighted_n": group.sw,
                "effective_n": fairness.kish_effective_n(group.sw, group.sww),
                "insufficient": group.n < min_n,
                "flagged": bool(flags),
                "flags": flags,
                "severity": _severity(metrics),
                "metrics": metrics,
            }
        )
    flagged.sort(key=lambda f: (f["direction"] != "worse", -abs(f["difference"] or 0.0)))
    comparisons = sum(
        1 for s in segments for m in s["metrics"].values() if m["difference"] is not None
    )
    return {
        "scope": {
            "project": audit.project.slug,
            "source": audit.source,
            "source_label": _source_label(audit),
            "model_version": audit.model_version or None,
            "rows": overall_group.n,
            "segments": keys,
            "intersectional": params["intersectional"],
            "positive_label": params.get("positive_label"),
        },
        "method": _method(audit),
        "reference": {
            "segment": None if reference_spec == "overall" else dict(reference_spec),
            "label": reference_label,
        },
        "overall": {
            "n": overall_group.n,
            "weighted_n": overall_group.sw,
            "effective_n": fairness.kish_effective_n(overall_group.sw, overall_group.sww),
            "metrics": {name: _estimate_json(overall[name]) for name in names},
        },
        "segments": segments,
        "flagged": flagged,
        "comparisons": comparisons,
        "caveats": caveats,
    }


def _estimate_json(estimate: fairness.Estimate) -> dict[str, Any]:
    return {
        "value": estimate.value,
        "ci_low": estimate.ci_low,
        "ci_high": estimate.ci_high,
        "n": estimate.n,
        "weighted_n": estimate.weighted_n,
        "effective_n": estimate.effective_n,
        "insufficient": estimate.value is None,
    }


def _direction(name: str, difference: float | None) -> str | None:
    if difference is None or difference == 0:
        return None
    higher = difference > 0
    return "worse" if higher == (name.split(":")[0] in HIGHER_IS_WORSE) else "better"


def _severity(metrics: dict[str, Any]) -> float:
    """How bad a segment's worst flagged figure is: its |difference|, positive when worse than
    the reference, negative when only better; 0 without flags. Tables sort on it."""
    worse = [
        abs(m["difference"]) for m in metrics.values() if m["flagged"] and m["direction"] == "worse"
    ]
    if worse:
        return max(worse)
    better = [abs(m["difference"]) for m in metrics.values() if m["flagged"]]
    return -max(better) if better else 0.0


def _label(keys: tuple[str, ...], values: tuple[str, ...]) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(keys, values, strict=True)) or "overall"


def _source_label(audit: Audit) -> str:
    if audit.gold_version_id is not None:
        version = audit.gold_version
        gold = f"gold set {version.gold_set.slug} v{version.number}"
        return f"{gold} scored against {audit.model_version}"
    if audit.export_id is not None:
        return f"export {audit.export_id}" + (
            f" (model version {audit.model_version})" if audit.model_version else ""
        )
    if audit.queue_id is not None:
        return f"queue {audit.queue_id} “{audit.queue.name}”" + (
            f" (model version {audit.model_version})" if audit.model_version else ""
        )
    return "deleted source"


def _method(audit: Audit) -> dict[str, Any]:
    params = audit.params
    gold = audit.gold_version_id is not None
    weighted = params["weighted"] and not gold
    return {
        "weighted": weighted,
        "estimator": "hajek" if weighted else "unweighted proportion",
        "weights": "1/π (inclusion probability)" if weighted else "1",
        "interval": "wilson on kish effective n",
        "difference_interval": "newcombe hybrid score (from the two wilson intervals)",
        "confidence": params["confidence"],
        "z": fairness.z_value(params["confidence"]),
        "min_n": params["min_n"],
        "tolerance": params["tolerance"],
        "four_fifths": fairness.FOUR_FIFTHS,
        "reference": "overall (every audited row, the segment included)"
        if params["reference"] == "overall"
        else "named segment",
    }


def _caveats(audit: Audit, source: AuditSource, result: dict[str, Any]) -> list[str]:
    params = audit.params
    min_n = params["min_n"]
    caveats: list[str] = []
    rows = result["overall"]["n"]
    if rows == 0:
        caveats.append("The source has no audited rows: nothing to estimate.")
    insufficient = [s for s in result["segments"] if s["insufficient"]]
    if insufficient:
        caveats.append(
            f"{len(insufficient)} of {len(result['segments'])} segments have fewer than "
            f"min_n = {min_n} rows: reported as insufficient, without estimates, never flagged."
        )
    comparisons = result["comparisons"]
    if comparisons:
        expected = comparisons * (1 - params["confidence"])
        caveats.append(
            f"{comparisons} comparisons at {params['confidence']:.0%} confidence each: about "
            f"{expected:.1f} intervals would exclude zero by chance alone; the tolerance "
            f"({params['tolerance']}) keeps small differences from being flagged, and a flag is "
            "a reason to look, not a verdict."
        )
    error = result["overall"]["metrics"].get("error_rate", {})
    undecided = rows - (error.get("n") or 0)
    if rows and undecided:
        caveats.append(
            f"{undecided:,} of {rows:,} rows have no decided verdict (unsure, or none): the error "
            "rate is over decided rows only."
        )
    if params["weighted"] and not source.is_gold and rows:
        overall = result["overall"]
        if overall["effective_n"] < 0.9 * rows:
            caveats.append(
                f"Unequal sampling weights: the {rows:,} rows carry the information of about "
                f"{overall['effective_n']:,.0f} (Kish's effective n), and intervals are as wide."
            )
    if audit.params.get("classes") and not params.get("positive_label"):
        caveats.append("No positive_label: FPR, FNR and selection rate are not computed.")
    if source.is_gold:
        total = gold_items_count(gold_version_id=source.gold_version_id or 0)
        if total > rows:
            caveats.append(
                f"{total - rows} of {total} gold items have no prediction of model version "
                f"{audit.model_version} (no external_id equal to the key, no equal input): "
                "they are not scored, and the figures describe the matched items only."
            )
        caveats.append(
            "A gold set is curated, not sampled: its figures describe the gold set, not "
            "production traffic (weights are 1)."
        )
    if audit.queue_id is not None:
        queue = audit.queue
        waiting = QueueItem.objects.filter(
            queue_id=queue.pk, gold_item__isnull=True, prediction__isnull=False
        ).exclude(status=QueueItem.Status.COMPLETE)
        if source.model_version is not None:
            waiting = waiting.filter(prediction__model_version=source.model_version)
        left_out = waiting.count()
        if left_out:
            caveats.append(
                f"{left_out} items of the queue are not complete (open or waiting for "
                "adjudication) and are left out; ties are often the harder cases."
            )
        if queue.source != Queue.Source.PREDICTIONS:
            caveats.append(
                f"The queue samples {queue.get_source_display().lower()}: dispute and "
                "negative-feedback rates describe that population, not all predictions."
            )
    return caveats
