"""Sampling runs: a fair, recorded draw of predictions into a queue, done in SQL.

Every queued item records its inclusion probability π and its stratum, so estimates made from
labels can be weighted back to the population. The population of a run is what matches the
queue's policy and is not yet in the queue; the draw is a deterministic function of the seed and
that population:

* ``all`` — everything, π = 1 (a ``disputes`` queue always draws this way).
* ``uniform`` — simple random sampling without replacement of n = size (or round(rate·N)),
  π = n / N: the n rows with the smallest u(seed, id).
* ``stratified`` — the same within each stratum (the values of the ``strata`` segment keys),
  with n_h allocated proportionally, equally, or proportionally after a minimum per stratum;
  π_h = n_h / N_h. Allocations are integers that add up to n exactly (largest remainders).
* ``uncertainty`` — Poisson sampling with p_i = min(1, c·(1 - confidence_i)), c chosen so the
  expected size is n; a row is in when u(seed, id) < p_i, and π_i = p_i. A missing confidence
  counts as 0.5.

The population is counted with one GROUP BY and the sample is written with one
INSERT … SELECT; nothing is loaded into Python but the per-stratum counts.
"""

from __future__ import annotations

import math
import secrets
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import (
    Case,
    CharField,
    Count,
    Exists,
    F,
    FloatField,
    IntegerField,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
    Window,
)
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Coalesce, Concat, Greatest, Least, RowNumber
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from feedback.errors import FieldError, InvalidInput
from feedback.models import Feedback, Prediction
from feedback.selectors import with_any_category
from feedback.services.disputes import disputes_mark_in_review

from ..enqueue import enqueue_after_commit
from ..models import Queue, QueueItem, SamplingRun
from ..randomness import HashUniform
from . import notifications

Strategy, Source, Allocation = Queue.Strategy, Queue.Source, Queue.Allocation
POLICY_FIELDS = (
    "source",
    "filter",
    "strategy",
    "size",
    "rate",
    "strata",
    "allocation",
    "min_per_stratum",
)
MISSING = "∅"  # stratum value of a row without that segment key
# Margin of the pre-filter u < t_h of uniform and stratified draws (see _draw).
THRESHOLD_SIGMAS, THRESHOLD_SLACK = 6.0, 10.0


def policy_of(queue: Queue) -> dict[str, Any]:
    return {name: getattr(queue, name) for name in POLICY_FIELDS}


# --- requesting and running ------------------------------------------------------------------


def sampling_run_request(
    *,
    queue: Queue,
    actor: AbstractBaseUser | None = None,
    seed: int | None = None,
    trigger: str = "manual",
) -> SamplingRun:
    """Record a pending run and enqueue its draw after commit (the request never waits)."""
    if seed is None:
        seed = queue.seed if queue.seed is not None else secrets.randbelow(2**31)
    run = SamplingRun.objects.create(
        queue=queue,
        seed=seed,
        policy=policy_of(queue),
        requested_by=actor if actor is not None and actor.is_authenticated else None,
        trigger=trigger,
    )
    enqueue_after_commit("sampling_run_task", run.pk)
    return run


def sampling_run_execute(*, run_id: int) -> SamplingRun:
    """Draw a pending run. Idempotent: a run that is not pending is left as it is.

    The draw and the run's outcome commit together, so a worker that dies mid-way leaves no
    item behind; the run stays ``running`` until ``sampling_runs_recover`` hands it back.
    """
    claimed = SamplingRun.objects.filter(pk=run_id, status=SamplingRun.Status.PENDING).update(
        status=SamplingRun.Status.RUNNING, started_at=timezone.now()
    )
    run = SamplingRun.objects.select_related("queue", "queue__project").get(pk=run_id)
    if not claimed:
        return run
    try:
        with transaction.atomic():
            population, sampled = _draw(run)
            run.population, run.sampled = population, sampled
            run.status, run.finished_at = SamplingRun.Status.DONE, timezone.now()
            run.save(update_fields=["population", "sampled", "status", "finished_at"])
            notifications.sampling_run_finished_emit(run=run)
    except InvalidInput as exc:
        SamplingRun.objects.filter(pk=run_id).update(
            status=SamplingRun.Status.FAILED, error=str(exc), finished_at=timezone.now()
        )
        run.refresh_from_db()
    return run


def sampling_runs_recover(*, stale_after_seconds: int) -> int:
    """Hand back runs whose worker died (``running`` too long) or whose message was lost
    (``pending`` too long, e.g. a broker outage): they go back to pending and are enqueued."""
    cutoff = timezone.now() - timezone.timedelta(seconds=stale_after_seconds)
    stale = list(
        SamplingRun.objects.filter(
            Q(status=SamplingRun.Status.RUNNING, started_at__lt=cutoff)
            | Q(status=SamplingRun.Status.PENDING, created_at__lt=cutoff)
        ).values_list("pk", flat=True)
    )
    SamplingRun.objects.filter(pk__in=stale, status=SamplingRun.Status.RUNNING).update(
        status=SamplingRun.Status.PENDING
    )
    for run_id in stale:
        enqueue_after_commit("sampling_run_task", run_id)
    return len(stale)


def queues_schedule_due(*, now=None) -> list[SamplingRun]:
    """Request a run for every active queue whose ``schedule_minutes`` have passed."""
    now = now or timezone.now()
    runs = []
    for queue in Queue.objects.filter(active=True, schedule_minutes__isnull=False):
        due = (
            queue.last_scheduled_at is None
            or (now - queue.last_scheduled_at).total_seconds() >= queue.schedule_minutes * 60
        )
        # Conditional update: two beat ticks (or two beats) never schedule one slot twice.
        if due and Queue.objects.filter(
            pk=queue.pk, last_scheduled_at=queue.last_scheduled_at
        ).update(last_scheduled_at=now):
            runs.append(sampling_run_request(queue=queue, trigger="schedule"))
    return runs


# --- the draw --------------------------------------------------------------------------------


def validate_policy(policy: dict[str, Any], *, label_choices: list[str] | None = None) -> None:
    """Refuse a sampling policy that cannot be drawn, naming the field (``sampling.<name>``)."""
    errors: list[FieldError] = []
    strategy, size, rate = policy.get("strategy"), policy.get("size"), policy.get("rate")

    def err(name: str, code: str, detail: str) -> None:
        errors.append(FieldError(f"sampling.{name}", code, detail))

    if policy.get("source") not in Source.values:
        err("source", "invalid_choice", f"One of {', '.join(Source.values)}.")
    if strategy not in Strategy.values:
        err("strategy", "invalid_choice", f"One of {', '.join(Strategy.values)}.")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        err("size", "invalid", "A positive integer, or null.")
    if rate is not None and (
        isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 1
    ):
        err("rate", "invalid", "A number in (0, 1], or null.")
    if strategy in (Strategy.UNIFORM, Strategy.STRATIFIED, Strategy.UNCERTAINTY) and (
        (size is None) == (rate is None)
    ):
        err("size", "required", f"The {strategy} strategy needs exactly one of size and rate.")
    strata = policy.get("strata") or []
    if not isinstance(strata, list) or not all(isinstance(k, str) and k for k in strata):
        err("strata", "invalid", "A list of segment keys.")
    elif strategy == Strategy.STRATIFIED and not strata:
        err("strata", "required", "Stratified sampling needs at least one segment key.")
    if policy.get("allocation") not in Allocation.values:
        err("allocation", "invalid_choice", f"One of {', '.join(Allocation.values)}.")
    minimum = policy.get("min_per_stratum") or 0
    if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 0:
        err("min_per_stratum", "invalid", "A non-negative integer.")
    _validate_filter(policy.get("filter") or {}, errors)
    if errors:
        raise InvalidInput(errors)


FILTER_KEYS = {"model_version", "kinds", "categories", "created_after", "created_before", "segment"}


def _validate_filter(spec: Any, errors: list[FieldError]) -> None:
    if not isinstance(spec, dict):
        errors.append(FieldError("sampling.filter", "invalid_type", "An object."))
        return
    for key in spec:
        if key not in FILTER_KEYS:
            errors.append(
                FieldError(
                    f"sampling.filter.{key}",
                    "unknown_field",
                    f"Unknown filter; allowed: {', '.join(sorted(FILTER_KEYS))}.",
                )
            )
    for key in ("created_after", "created_before"):
        value = spec.get(key)
        if value is not None and (not isinstance(value, str) or parse_datetime(value) is None):
            errors.append(FieldError(f"sampling.filter.{key}", "invalid", "An ISO 8601 date-time."))
    kinds = spec.get("kinds")
    if kinds is not None and (
        not isinstance(kinds, list) or not set(kinds) <= set(Feedback.Kind.values)
    ):
        errors.append(
            FieldError("sampling.filter.kinds", "invalid", f"A subset of {Feedback.Kind.values}.")
        )
    for key in ("categories",):
        value = spec.get(key)
        if value is not None and (
            not isinstance(value, list) or not all(isinstance(v, str) for v in value)
        ):
            errors.append(FieldError(f"sampling.filter.{key}", "invalid", "A list of slugs."))
    segment = spec.get("segment")
    if segment is not None and (
        not isinstance(segment, dict) or not all(isinstance(v, str) for v in segment.values())
    ):
        errors.append(
            FieldError("sampling.filter.segment", "invalid", "An object of string values.")
        )


def population_queryset(queue: Queue, policy: dict[str, Any]) -> QuerySet[Prediction]:
    """Predictions that match the policy and are not in the queue yet."""
    spec = policy.get("filter") or {}
    qs = Prediction.objects.filter(project_id=queue.project_id)
    if spec.get("model_version"):
        qs = qs.filter(model_version=spec["model_version"])
    for key, value in (spec.get("segment") or {}).items():
        qs = (
            qs.filter(**{f"segment__{key}": value})
            if "__" not in key
            else qs.alias(**{f"_seg_{abs(hash(key))}": KeyTextTransform(key, "segment")}).filter(
                **{f"_seg_{abs(hash(key))}": value}
            )
        )
    source = policy["source"]
    if source == Source.PREDICTIONS:
        if spec.get("created_after"):
            qs = qs.filter(occurred_at__gte=parse_datetime(spec["created_after"]))
        if spec.get("created_before"):
            qs = qs.filter(occurred_at__lt=parse_datetime(spec["created_before"]))
    else:
        feedback = Feedback.objects.filter(prediction_id=OuterRef("pk"))
        if source == Source.DISPUTES:
            feedback = feedback.filter(
                kind=Feedback.Kind.DISPUTE, status=Feedback.DisputeStatus.OPEN
            )
        elif spec.get("kinds"):
            feedback = feedback.filter(kind__in=spec["kinds"])
        if spec.get("categories"):
            feedback = feedback.filter(with_any_category(spec["categories"]))
        if spec.get("created_after"):
            feedback = feedback.filter(created_at__gte=parse_datetime(spec["created_after"]))
        if spec.get("created_before"):
            feedback = feedback.filter(created_at__lt=parse_datetime(spec["created_before"]))
        qs = qs.filter(Exists(feedback))
    already = QueueItem.objects.filter(queue_id=queue.pk, prediction_id=OuterRef("pk"))
    return qs.filter(~Exists(already))


def stratum_expression(keys: list[str]):
    if not keys:
        return Value("", output_field=CharField())
    parts: list[Any] = []
    for position, key in enumerate(keys):
        parts.append(Value(f"{'|' if position else ''}{key}=", output_field=CharField()))
        parts.append(
            Coalesce(KeyTextTransform(key, "segment"), Value(MISSING), output_field=CharField())
        )
    return Concat(*parts, output_field=CharField())


def allocate(counts: dict[str, int], n: int, allocation: str, minimum: int = 0) -> dict[str, int]:
    """Integer sample sizes per stratum adding up to min(n, N), each at most N_h.

    Proportional: n·N_h/N. Equal: n/H. Minimum: proportional, but no stratum below
    min(N_h, minimum) — strata under their floor are raised to it and the rest of n is shared
    proportionally among the others (repeated until no share falls under its floor). Fractions
    go to the largest remainders (ties by stratum name); what a full stratum cannot take goes to
    the others the same way.
    """
    total = sum(counts.values())
    n = min(n, total)
    quota = dict.fromkeys(counts, 0)
    if allocation == Allocation.MINIMUM and minimum:
        floors = {s: min(size, minimum) for s, size in counts.items()}
        if sum(floors.values()) >= n:  # the floors alone exceed n: share n equally
            _fill(quota, counts, n, weights=dict.fromkeys(counts, 1))
            return quota
        fixed: dict[str, int] = {}
        while True:
            free = [s for s in counts if s not in fixed]
            remaining = n - sum(fixed.values())
            free_total = sum(counts[s] for s in free)
            under = {s: floors[s] for s in free if remaining * counts[s] / free_total < floors[s]}
            if not under:
                break
            fixed.update(under)
        quota.update(fixed)
        weights = {s: (0 if s in fixed else counts[s]) for s in counts}
        _fill(quota, counts, n - sum(fixed.values()), weights=weights)
        return quota
    weights = dict.fromkeys(counts, 1) if allocation == Allocation.EQUAL else dict(counts)
    _fill(quota, counts, n, weights=weights)
    return quota


def _fill(
    quota: dict[str, int], counts: dict[str, int], extra: int, *, weights: dict[str, int]
) -> None:
    while extra > 0:
        open_strata = {s: w for s, w in weights.items() if quota[s] < counts[s] and w > 0}
        if not open_strata:
            return
        weight_sum = sum(open_strata.values())
        shares = {s: extra * w / weight_sum for s, w in open_strata.items()}
        given = 0
        for stratum, share in shares.items():
            take = min(math.floor(share), counts[stratum] - quota[stratum])
            quota[stratum] += take
            given += take
        left = extra - given
        order = sorted(open_strata, key=lambda s: (-(shares[s] - math.floor(shares[s])), s))
        for stratum in order:
            if left == 0:
                break
            if quota[stratum] < counts[stratum]:
                quota[stratum] += 1
                left -= 1
        if left == extra:  # nothing could be placed
            return
        extra = left


def _draw(run: SamplingRun) -> tuple[dict[str, int], dict[str, int]]:
    queue, policy = run.queue, run.policy
    validate_policy(policy)
    strategy = Strategy.ALL if policy["source"] == Source.DISPUTES else policy["strategy"]
    keys = policy.get("strata") or [] if strategy == Strategy.STRATIFIED else []
    population = population_queryset(queue, policy).annotate(
        stratum=stratum_expression(keys), u=HashUniform(Value(run.seed), F("id"))
    )
    counts = dict(
        population.order_by()
        .values_list("stratum")
        .annotate(n=Count("id"))
        .values_list("stratum", "n")
    )
    total = sum(counts.values())
    if total == 0:
        return {}, {}
    size = policy.get("size")
    n = size if size is not None else round((policy.get("rate") or 1) * total)

    if strategy == Strategy.ALL:
        chosen = population.annotate(pi=Value(1.0, output_field=FloatField()))
    elif strategy in (Strategy.UNIFORM, Strategy.STRATIFIED):
        quota = allocate(
            counts,
            n,
            policy.get("allocation") or Allocation.PROPORTIONAL,
            policy.get("min_per_stratum") or 0,
        )
        quota = {s: q for s, q in quota.items() if q > 0}
        if not quota:
            return counts, {}
        # The sample of a stratum is its n_h rows with the smallest u. As u is uniform, those lie
        # below t_h = (n_h + 6·sqrt(n_h) + 10) / N_h but for a 6-sigma miss, so only rows under
        # t_h are ranked (the sort shrinks from N to about n rows); a stratum that comes up
        # short is drawn again from all its rows below. Either way the sample is the same.
        thresholds = {
            s: min(1.0, (q + THRESHOLD_SIGMAS * math.sqrt(q) + THRESHOLD_SLACK) / counts[s])
            for s, q in quota.items()
        }
        # One threshold for all strata (the largest): a superset of each stratum's candidates,
        # and one comparison per row instead of a CASE that recomputes the stratum per branch.
        candidates = population.filter(u__lt=max(thresholds.values()))
        chosen = _ranked(candidates, quota, counts)
    elif strategy == Strategy.UNCERTAINTY:
        weight = 1.0 - Coalesce(F("confidence"), Value(0.5), output_field=FloatField())
        scale = _poisson_scale(population.annotate(w=weight), n)
        if scale is None:
            return counts, {}
        p = Least(
            Value(1.0), Greatest(Value(0.0), weight * Value(scale)), output_field=FloatField()
        )
        chosen = population.annotate(pi=p).filter(pi__gt=0, u__lt=F("pi"))
    else:  # validate_policy refused it already
        raise InvalidInput.one("sampling.strategy", "invalid_choice", strategy)

    priority = QueueItem.PRIORITY_DISPUTE if policy["source"] == Source.DISPUTES else 0
    dispute = None
    if policy["source"] == Source.DISPUTES:
        dispute = Subquery(
            Feedback.objects.filter(
                prediction_id=OuterRef("pk"),
                kind=Feedback.Kind.DISPUTE,
                status=Feedback.DisputeStatus.OPEN,
            )
            .order_by()
            .values("prediction_id")
            .annotate(first=Min("id"))
            .values("first")
        )
    _insert_items(
        run, chosen.values("id", "stratum", "pi"), priority=priority, dispute_subquery=dispute
    )
    sampled = _sampled_per_stratum(run)
    if strategy in (Strategy.UNIFORM, Strategy.STRATIFIED) and sampled != quota:
        QueueItem.objects.filter(run=run).delete()  # a threshold missed: rank every row
        _insert_items(
            run,
            _ranked(population, quota, counts).values("id", "stratum", "pi"),
            priority=priority,
            dispute_subquery=dispute,
        )
        sampled = _sampled_per_stratum(run)
    if policy["source"] == Source.DISPUTES:
        disputes_mark_in_review(
            dispute_ids=Feedback.objects.filter(
                kind=Feedback.Kind.DISPUTE,
                status=Feedback.DisputeStatus.OPEN,
                prediction__queue_items__run=run,
            ).values_list("pk", flat=True),
            note=f"Queued for review in {queue.name}.",
        )
    return counts, sampled


def _ranked(rows: QuerySet, quota: dict[str, int], counts: dict[str, int]) -> QuerySet:
    """The first quota[s] rows of each stratum s in (u, id) order, with π = quota[s] / N_s."""
    return rows.annotate(
        rank=Window(
            RowNumber(), partition_by=[F("stratum")], order_by=[F("u").asc(), F("id").asc()]
        ),
        quota=Case(
            *[When(stratum=s, then=Value(q)) for s, q in quota.items()],
            default=Value(0),
            output_field=IntegerField(),
        ),
        pi=Case(
            *[When(stratum=s, then=Value(q / counts[s])) for s, q in quota.items()],
            default=Value(0.0),
            output_field=FloatField(),
        ),
    ).filter(rank__lte=F("quota"))


def _sampled_per_stratum(run: SamplingRun) -> dict[str, int]:
    return dict(
        QueueItem.objects.filter(run=run)
        .order_by()
        .values_list("stratum")
        .annotate(n=Count("id"))
        .values_list("stratum", "n")
    )


def _poisson_scale(population: QuerySet, n: int) -> float | None:
    """The c with Σ min(1, c·w_i) = n (w_i = 1 - confidence), found with a few SQL sums."""
    capped_count, scale = 0, None
    for _ in range(50):
        threshold = None if scale is None else 1.0 / scale
        uncapped = population if threshold is None else population.filter(w__lt=threshold)
        stats = uncapped.aggregate(total=Sum("w"))
        weight_sum = stats["total"] or 0.0
        if threshold is not None:
            capped_count = population.filter(w__gte=threshold).count()
        if weight_sum <= 0:
            return scale
        new_scale = (n - capped_count) / weight_sum
        if new_scale <= 0:
            return scale
        if scale is not None and abs(new_scale - scale) <= 1e-12 * new_scale:
            return new_scale
        scale = new_scale
    return scale


def _insert_items(run: SamplingRun, rows: QuerySet, *, priority: int, dispute_subquery) -> int:
    """Store the sample; a prediction already in the queue is skipped (unique constraint).

    On PostgreSQL the sample is selected first and then inserted from arrays: PostgreSQL never
    runs the SELECT of an INSERT … SELECT in parallel, and the scan that hashes every row is
    the cost of a draw. Only the sample (not the population) passes through Python.
    """
    if dispute_subquery is not None:
        rows = rows.annotate(dispute_id=dispute_subquery).values(
            "id", "stratum", "pi", "dispute_id"
        )
    now = timezone.now()
    columns = (
        "INSERT INTO labeling_queueitem (queue_id, prediction_id, feedback_id, run_id, "
        "inclusion_probability, stratum, priority, status, labels_count, created_at) "
    )
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            fields = ["id", "stratum", "pi"] + (["dispute_id"] if dispute_subquery else [])
            sample = list(rows.values_list(*fields))
            if not sample:
                return 0
            ids, strata, pis = ([row[k] for row in sample] for k in range(3))
            feedback = [row[3] for row in sample] if dispute_subquery else [None] * len(sample)
            cursor.execute(
                columns + "SELECT %s, t.id, t.feedback_id, %s, t.pi, t.stratum, %s, 'open', 0, %s "
                "FROM unnest(%s::bigint[], %s::bigint[], %s::float8[], %s::text[]) "
                "AS t(id, feedback_id, pi, stratum) "
                "ON CONFLICT (queue_id, prediction_id) DO NOTHING",
                [run.queue_id, run.pk, priority, now, ids, feedback, pis, strata],
            )
            return cursor.rowcount
        feedback_column = "s.dispute_id" if dispute_subquery is not None else "NULL"
        select_sql, params = rows.query.sql_with_params()
        # "WHERE true" keeps SQLite from reading ON CONFLICT as part of the SELECT's join syntax.
        cursor.execute(
            columns + f"SELECT %s, s.id, {feedback_column}, %s, s.pi, s.stratum, %s, 'open', 0, %s "
            f"FROM ({select_sql}) AS s WHERE true "
            "ON CONFLICT (queue_id, prediction_id) DO NOTHING",
            [run.queue_id, run.pk, priority, now, *params],
        )
        return cursor.rowcount
