"""Alert rules: validation, evaluation from rollups, state changes as events, notifications.

Evaluation of a rule at moment ``now``: the window is the ``window_minutes`` ending at the
start of the current hour (rollups are hourly). The watched figure is the rule's metric over
that window, for its filter (model version or "latest", at most one segment key, a category
for ``category_rate``). The condition:

- ``{"above": t}``: the window's rate is above t (fires); it stays firing until the rate falls
  below 0.9 t (hysteresis: a rate hovering at the threshold does not flap).
- ``{"baseline": {...}, "min_lift": d, "alpha": a}``: the watched rate exceeds the baseline's
  (another model version over the same window, or the same filter over the ``previous_days``
  before the window) by more than d, by a one-sided test at level a (pooled z when d = 0, Wald
  at the estimated proportions otherwise). It stays firing while the lift is above d / 2.

Fewer than ``min_volume`` in the window's denominator (or the baseline's): nothing changes.
After a resolution, the rule does not fire again within ``cooldown_minutes``.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework import serializers

from feedback.api.inputs import StrictSerializer, validated
from feedback.errors import InvalidInput
from feedback.services.events import event_emit

from .metrics import metric_check, metric_totals
from .models import AlertEvent, AlertRule, MetricRollup
from .stats import one_sided_p

logger = logging.getLogger(__name__)
State = AlertRule.State
HYSTERESIS = 0.9


# --- input -------------------------------------------------------------------------------------


class FilterSerializer(StrictSerializer):
    model_version = serializers.CharField(max_length=100, allow_null=True, required=False)
    segment = serializers.DictField(
        child=serializers.CharField(max_length=200), required=False, allow_null=True
    )
    category = serializers.SlugField(max_length=64, allow_null=True, required=False)

    def validate_segment(self, value):
        if value and len(value) > 1:
            raise serializers.ValidationError(
                "One segment key at a time (rollups are kept per key).", code="invalid"
            )
        return value or None


class BaselineSerializer(StrictSerializer):
    model_version = serializers.CharField(max_length=100, required=False)
    previous_days = serializers.IntegerField(min_value=1, max_value=90, required=False)

    def validate(self, attrs):
        if ("model_version" in attrs) == ("previous_days" in attrs):
            raise serializers.ValidationError(
                "Exactly one of model_version or previous_days.", code="invalid"
            )
        return attrs


class ConditionSerializer(StrictSerializer):
    above = serializers.FloatField(min_value=0, max_value=1, required=False)
    baseline = BaselineSerializer(required=False)
    min_lift = serializers.FloatField(min_value=0, max_value=1, required=False, default=0.0)
    alpha = serializers.FloatField(min_value=1e-6, max_value=0.5, required=False, default=0.01)

    def validate(self, attrs):
        if ("above" in attrs) == ("baseline" in attrs):
            raise serializers.ValidationError("Exactly one of above or baseline.", code="invalid")
        return attrs


class AlertRuleSerializer(StrictSerializer):
    project = serializers.SlugField(required=False)
    name = serializers.CharField(max_length=200)
    metric = serializers.CharField(max_length=100)
    filter = FilterSerializer(required=False)
    window_minutes = serializers.IntegerField(min_value=60, max_value=60 * 24 * 31, default=60)
    condition = ConditionSerializer()
    min_volume = serializers.IntegerField(min_value=1, default=100)
    cooldown_minutes = serializers.IntegerField(min_value=0, max_value=60 * 24 * 30, default=60)
    notify_emails = serializers.ListField(
        child=serializers.EmailField(), max_length=20, required=False, default=list
    )
    active = serializers.BooleanField(default=True)

    def validate_metric(self, value):
        try:
            return metric_check(value)
        except InvalidInput as refused:
            raise serializers.ValidationError(
                refused.errors[0].detail, code="invalid_choice"
            ) from None

    def validate_window_minutes(self, value):
        if value % 60:
            raise serializers.ValidationError(
                "A whole number of hours (60, 120, …).", code="invalid"
            )
        return value

    def validate(self, attrs):
        metric, flt = attrs.get("metric"), attrs.get("filter") or {}
        if metric and metric.startswith("category_rate:") and flt.get("category"):
            raise serializers.ValidationError(
                {"filter": ["category_rate names its category already."]}, code="invalid"
            )
        return attrs


def _clean(data: dict, *, partial: bool, instance: AlertRule | None = None) -> dict:
    if partial and instance is not None:
        merged = {**rule_document(instance), **data}
        for key in ("id", "state", "state_since", "created_at", "last_evaluated_at", "project"):
            merged.pop(key, None)
        if "project" in data:
            merged["project"] = data["project"]
        data = merged
    clean = dict(validated(AlertRuleSerializer, data))
    clean["filter"] = {k: v for k, v in dict(clean.get("filter") or {}).items() if v is not None}
    condition = dict(clean["condition"])
    if "baseline" in condition:
        condition["baseline"] = dict(condition["baseline"])
    else:
        condition.pop("min_lift", None)
        condition.pop("alpha", None)
    clean["condition"] = condition
    clean.pop("project", None)
    return clean


def rule_create(*, project, data: dict) -> AlertRule:
    clean = _clean(data, partial=False)
    return AlertRule.objects.create(project=project, state_since=timezone.now(), **clean)


def rule_update(*, rule: AlertRule, data: dict) -> AlertRule:
    if "project" in data and data["project"] != rule.project.slug:
        raise InvalidInput.one("project", "read_only", "A rule stays in its project.")
    clean = _clean({k: v for k, v in data.items() if k != "project"}, partial=True, instance=rule)
    for name, value in clean.items():
        setattr(rule, name, value)
    rule.save()
    return rule


def rule_document(rule: AlertRule) -> dict:
    return {
        "id": rule.pk,
        "project": rule.project.slug,
        "name": rule.name,
        "metric": rule.metric,
        "filter": {"model_version": None, "segment": None, "category": None, **rule.filter},
        "window_minutes": rule.window_minutes,
        "condition": rule.condition,
        "min_volume": rule.min_volume,
        "cooldown_minutes": rule.cooldown_minutes,
        "notify_emails": rule.notify_emails,
        "active": rule.active,
        "state": rule.state,
        "state_since": rule.state_since,
        "last_evaluated_at": rule.last_evaluated_at,
        "created_at": rule.created_at,
    }


def event_document(event: AlertEvent) -> dict:
    return {
        "id": event.pk,
        "rule": event.rule_id,
        "state": event.state,
        "value": event.value,
        "ci_low": event.ci_low,
        "ci_high": event.ci_high,
        "volume": event.volume,
        "baseline_value": event.baseline_value,
        "p_value": event.p_value,
        "model_version": event.model_version,
        "window_start": event.window_start,
        "window_end": event.window_end,
        "created_at": event.created_at,
    }


# --- evaluation --------------------------------------------------------------------------------


def latest_model_version(project_id: int, cache: dict | None = None) -> str | None:
    """The model version with the newest predictions (the most of them in that hour)."""
    if cache is not None and project_id in cache:
        return cache[project_id]
    rows = MetricRollup.objects.filter(
        project_id=project_id, segment_key="", segment_value="", predictions__gt=0
    )
    newest = rows.order_by("-hour").values_list("hour", flat=True).first()
    version = (
        rows.filter(hour=newest)
        .order_by("-predictions", "model_version")
        .values_list("model_version", flat=True)
        .first()
        if newest is not None
        else None
    )
    if cache is not None:
        cache[project_id] = version
    return version


def _window(rule: AlertRule, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    end = now.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    return end - dt.timedelta(minutes=rule.window_minutes), end


def _specs(rule: AlertRule, now: dt.datetime, cache: dict | None) -> tuple[dict, dict | None]:
    """What the rule reads: its own window (``metric_total``'s arguments) and its baseline's."""
    start, end = _window(rule, now)
    flt = rule.filter or {}
    metric = rule.metric
    if flt.get("category"):
        metric = f"category_rate:{flt['category']}"
    version = flt.get("model_version")
    if version == "latest":
        version = latest_model_version(rule.project_id, cache)
    segment = next(iter((flt.get("segment") or {}).items()), None)
    watched = {
        "project_id": rule.project_id,
        "metric": metric,
        "model_version": version,
        "start": start,
        "end": end,
        "segment": segment,
    }
    baseline = (rule.condition or {}).get("baseline")
    if baseline is None:
        return watched, None
    if "model_version" in baseline:
        return watched, {**watched, "model_version": baseline["model_version"]}
    days = dt.timedelta(days=baseline["previous_days"])
    return watched, {**watched, "start": start - days, "end": start}


def rules_measure(rules: list[AlertRule], now: dt.datetime, cache: dict | None = None) -> list:
    """``rule_measure`` of each rule, their windows summed by a few grouped queries."""
    cache = {} if cache is None else cache
    pairs = [_specs(rule, now, cache) for rule in rules]
    wanted = [spec for pair in pairs for spec in pair if spec is not None]
    totals = iter(metric_totals(wanted))
    results = []
    for rule, (watched, base) in zip(rules, pairs, strict=True):
        figures = next(totals)
        results.append(_judge(rule, watched, figures, next(totals) if base else None))
    return results


def rule_measure(rule: AlertRule, now: dt.datetime, cache: dict | None = None) -> dict:
    """The figures of the rule's window and whether its condition holds (to fire, to stay)."""
    return rules_measure([rule], now, cache)[0]


def _judge(rule: AlertRule, spec: dict, watched: dict, base: dict | None) -> dict:
    result = {
        "value": watched["value"],
        "ci_low": watched["ci_low"],
        "ci_high": watched["ci_high"],
        "volume": watched["denominator"],
        "numerator": watched["numerator"],
        "model_version": spec["model_version"] or "",
        "window_start": spec["start"],
        "window_end": spec["end"],
        "baseline_value": None,
        "p_value": None,
        "enough": watched["denominator"] >= rule.min_volume,
        "breach": False,
        "holds": False,
    }
    if not result["enough"] or watched["value"] is None:
        result["enough"] = False
        return result
    condition = rule.condition
    if "above" in condition:
        result["breach"] = watched["value"] > condition["above"]
        result["holds"] = watched["value"] > condition["above"] * HYSTERESIS
        return result
    if base is None or base["denominator"] < rule.min_volume or base["value"] is None:
        result["enough"] = False
        return result
    lift = condition.get("min_lift", 0.0)
    na, nb = float(base["denominator"]), float(watched["denominator"])
    xa, xb = min(float(base["numerator"]), na), min(float(watched["numerator"]), nb)
    p = one_sided_p(xa, na, xb, nb, lift)
    result["baseline_value"] = base["value"]
    result["p_value"] = p
    difference = watched["value"] - base["value"]
    result["breach"] = difference > lift and p is not None and p < condition.get("alpha", 0.01)
    result["holds"] = difference > lift / 2
    return result


def _notify(rule: AlertRule, event: AlertEvent) -> None:
    data = {
        "rule": rule.pk,
        "name": rule.name,
        "metric": rule.metric,
        "state": event.state,
        "value": event.value,
        "ci_low": event.ci_low,
        "ci_high": event.ci_high,
        "volume": event.volume,
        "baseline_value": event.baseline_value,
        "p_value": event.p_value,
        "model_version": event.model_version,
        "window_start": event.window_start.isoformat(),
        "window_end": event.window_end.isoformat(),
    }
    kind = "alert.fired" if event.state == State.FIRING else "alert.resolved"
    # In the evaluation's transaction: a rolled-back evaluation sends nothing.
    event_emit(
        project_id=rule.project_id, type=kind, data=data, dedupe_key=f"alert-event:{event.pk}"
    )
    if rule.notify_emails:
        subject = f"[Redress] {rule.project.slug}: {rule.name} {event.state}"
        body = "\n".join(f"{k}: {v}" for k, v in data.items())
        recipients = list(rule.notify_emails)
        transaction.on_commit(lambda: _mail(subject, body, recipients))


def _mail(subject: str, body: str, recipients: list[str]) -> None:
    try:
        send_mail(subject, body, None, recipients)
    except Exception:  # a mail server down must not undo the alert
        logger.exception("alert email failed")


def _transition(rule: AlertRule, result: dict, now: dt.datetime) -> str | None:
    """The state the rule moves to after this measurement (None: it stays)."""
    if not result["enough"]:
        return None
    if rule.state == State.FIRING and not result["holds"]:
        return State.RESOLVED
    if rule.state != State.FIRING and result["breach"]:
        cooled = (
            rule.state != State.RESOLVED
            or rule.state_since is None
            or (now - rule.state_since >= dt.timedelta(minutes=rule.cooldown_minutes))
        )
        if cooled:
            return State.FIRING
    return None


def _recorded(result: dict) -> dict:
    return {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in result.items()}


def rule_evaluate(
    *,
    rule_id: int,
    now: dt.datetime | None = None,
    cache: dict | None = None,
    result: dict | None = None,
) -> dict:
    """Evaluate one rule now; a state change is recorded as an event (once per window).
    ``result``: the rule's measurement at ``now`` when the caller has it already."""
    now = now or timezone.now()
    with transaction.atomic():
        rule = AlertRule.objects.select_for_update().select_related("project").get(pk=rule_id)
        if result is None:
            result = rule_measure(rule, now, cache)
        new_state = _transition(rule, result, now)
        event = None
        if new_state is not None:
            try:
                with transaction.atomic():
                    event = AlertEvent.objects.create(
                        rule=rule,
                        state=new_state,
                        value=result["value"],
                        ci_low=result["ci_low"],
                        ci_high=result["ci_high"],
                        volume=result["volume"],
                        baseline_value=result["baseline_value"],
                        p_value=result["p_value"],
                        model_version=result["model_version"],
                        window_start=result["window_start"],
                        window_end=result["window_end"],
                    )
            except IntegrityError:  # this window already recorded this change
                event = None
            if event is not None:
                rule.state, rule.state_since = new_state, now
                _notify(rule, event)
        rule.last_evaluated_at = now
        rule.last_result = _recorded(result)
        rule.save(update_fields=["state", "state_since", "last_evaluated_at", "last_result"])
    return {
        "state": rule.state,
        "value": result["value"],
        "ci_low": result["ci_low"],
        "ci_high": result["ci_high"],
        "volume": result["volume"],
        "event": event.pk if event else None,
    }


def rules_evaluate(*, now: dt.datetime | None = None) -> int:
    """Evaluate every active rule (beat, every minute). Returns the number of events.

    All rules are measured together (``rules_measure``: a few grouped queries). A rule whose
    state changes goes through ``rule_evaluate`` with its measurement (its own transaction,
    the rule locked and its state read again); the others only record the measurement, all
    in one UPDATE."""
    now = now or timezone.now()
    rules = list(AlertRule.objects.filter(active=True).order_by("pk"))
    fired = 0
    quiet = []
    for rule, result in zip(rules, rules_measure(rules, now), strict=True):
        if _transition(rule, result, now) is None:
            rule.last_evaluated_at, rule.last_result = now, _recorded(result)
            quiet.append(rule)
        elif rule_evaluate(rule_id=rule.pk, now=now, result=result)["event"]:
            fired += 1
    AlertRule.objects.bulk_update(quiet, ["last_evaluated_at", "last_result"])
    return fired
