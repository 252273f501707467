"""Alert rules with known truth: the rule watching the shifted locale fires, the others do not;
noise alone fires no more often than alpha; one event per window; API and access."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from scipy.stats import binom

from feedback.models import Membership
from feedback.services.projects import membership_grant
from monitoring.alerts import rule_create, rule_evaluate
from monitoring.models import AlertEvent, AlertRule, MetricRollup
from monitoring.rollups import rollups_step
from tests.conftest import client_for, token_for

from .conftest import T0, make_stream

pytestmark = pytest.mark.django_db
FUTURE = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
NOW = T0 + dt.timedelta(hours=48, minutes=5)  # the window is the 48 hours of the stream


def _rule(project, locale, **extra):
    data = {
        "name": f"disputes {locale}",
        "metric": "dispute_rate",
        "filter": {"model_version": "v2", "segment": {"locale": locale}},
        "window_minutes": 48 * 60,
        "condition": {"baseline": {"model_version": "v1"}, "min_lift": 0.0, "alpha": 0.01},
        "min_volume": 100,
        "cooldown_minutes": 60,
        "notify_emails": ["oncall@example.com"],
    }
    data.update(extra)
    return rule_create(project=project, data=data)


def test_shift_in_one_locale_fires_only_that_rule(
    project, mailoutbox, django_capture_on_commit_callbacks
):
    make_stream(
        project,
        seed=21,
        n=4000,
        locales=("de-DE", "en-US", "fr-FR"),
        rates={
            ("v1", "de-DE"): (0.1, 0.08),
            ("v2", "de-DE"): (0.1, 0.16),
            ("v1", "en-US"): (0.1, 0.08),
            ("v2", "en-US"): (0.1, 0.08),
            ("v1", "fr-FR"): (0.1, 0.08),
            ("v2", "fr-FR"): (0.1, 0.08),
        },
    )
    rollups_step(now=FUTURE)
    rules = {loc: _rule(project, loc) for loc in ("de-DE", "en-US", "fr-FR")}
    with django_capture_on_commit_callbacks(execute=True):
        results = {loc: rule_evaluate(rule_id=r.pk, now=NOW) for loc, r in rules.items()}
    assert results["de-DE"]["state"] == "firing" and results["de-DE"]["event"]
    assert results["en-US"]["state"] == "ok" and results["fr-FR"]["state"] == "ok"
    assert AlertEvent.objects.count() == 1
    assert len(mailoutbox) == 1 and "disputes de-DE firing" in mailoutbox[0].subject
    from feedback.models import OutboxEvent

    sent = OutboxEvent.objects.get(project=project, type="alert.fired")
    assert sent.data["name"] == "disputes de-DE" and sent.data["volume"] > 100
    assert sent.data["value"] > sent.data["baseline_value"]
    # the same window again: no second event
    again = rule_evaluate(rule_id=rules["de-DE"].pk, now=NOW + dt.timedelta(minutes=1))
    assert again["state"] == "firing" and again["event"] is None
    assert AlertEvent.objects.count() == 1
    # the shift is gone (later window with no data: below min_volume, state kept)
    later = rule_evaluate(rule_id=rules["de-DE"].pk, now=NOW + dt.timedelta(days=5))
    assert later["state"] == "firing" and later["volume"] == 0


def test_threshold_hysteresis_and_cooldown(project):
    make_stream(
        project,
        seed=5,
        n=1000,
        rates={("v1", "de-DE"): (0.1, 0.1), ("v1", "en-US"): (0.1, 0.1)},
        versions=("v1",),
    )
    rollups_step(now=FUTURE)
    total = MetricRollup.objects.filter(segment_key="")
    rate = sum(r.disputes for r in total) / sum(r.predictions for r in total)
    rule = rule_create(
        project=project,
        data={
            "name": "t",
            "metric": "dispute_rate",
            "window_minutes": 48 * 60,
            "min_volume": 100,
            "condition": {"above": rate - 0.01},
            "cooldown_minutes": 600,
        },
    )
    assert rule_evaluate(rule_id=rule.pk, now=NOW)["state"] == "firing"
    # lower bar inside the hysteresis band: still firing, no event
    AlertRule.objects.filter(pk=rule.pk).update(condition={"above": rate + 0.005})
    assert rule_evaluate(rule_id=rule.pk, now=NOW)["event"] is None
    rule.refresh_from_db()
    assert rule.state == "firing"
    AlertRule.objects.filter(pk=rule.pk).update(condition={"above": rate / 0.8})
    out = rule_evaluate(rule_id=rule.pk, now=NOW)
    assert out["state"] == "resolved" and out["event"]
    # cooldown: breaching again within 600 minutes does not fire
    AlertRule.objects.filter(pk=rule.pk).update(condition={"above": rate - 0.01})
    assert rule_evaluate(rule_id=rule.pk, now=NOW + dt.timedelta(minutes=10))["state"] == "resolved"
    states = list(
        AlertEvent.objects.filter(rule=rule).order_by("id").values_list("state", flat=True)
    )
    assert states == ["firing", "resolved"]


def test_noise_fires_no_more_often_than_alpha(project):
    """200 windows of noise (both versions at 10 %): false alarms <= alpha + binomial margin."""
    rng = random.Random(7)
    alpha, windows, n = 0.05, 200, 400
    rollups = []
    for w in range(windows):
        hour = T0 + dt.timedelta(hours=w)
        for version in ("v1", "v2"):
            disputes = sum(rng.random() < 0.1 for _ in range(n))
            rollups.append(
                MetricRollup(
                    project=project,
                    model_version=version,
                    hour=hour,
                    predictions=n,
                    disputes=disputes,
                )
            )
    MetricRollup.objects.bulk_create(rollups)
    rule = rule_create(
        project=project,
        data={
            "name": "noise",
            "metric": "dispute_rate",
            "filter": {"model_version": "v2"},
            "window_minutes": 60,
            "min_volume": 100,
            "cooldown_minutes": 0,
            "condition": {"baseline": {"model_version": "v1"}, "min_lift": 0, "alpha": alpha},
        },
    )
    fired = 0
    for w in range(windows):
        rule.refresh_from_db()
        rule.state = "ok"  # each window judged on its own
        rule.save(update_fields=["state"])
        fired += (
            rule_evaluate(rule_id=rule.pk, now=T0 + dt.timedelta(hours=w + 1))["state"] == "firing"
        )
    limit = binom.ppf(0.999, windows, alpha)
    assert fired <= limit, (fired, limit)


def test_api_crud_evaluate_events_and_access(project, data_client):
    admin = membership_grant(project=project, username="adm", role=Membership.Role.ADMIN)
    reviewer = membership_grant(project=project, username="rev", role=Membership.Role.REVIEWER)
    admin_client = client_for(token=token_for(admin.user))
    body = {
        "project": project.slug,
        "name": "dispute spike",
        "metric": "dispute_rate",
        "filter": {"model_version": "latest", "segment": {"locale": "de-DE"}, "category": None},
        "window_minutes": 60,
        "condition": {"above": 0.05},
        "min_volume": 100,
        "cooldown_minutes": 60,
        "notify_emails": ["oncall@example.com"],
        "active": True,
    }
    r = admin_client.post("/api/v1/alert-rules", body, format="json")
    assert r.status_code == 201, r.json()
    rule = r.json()
    assert rule["state"] == "ok" and rule["filter"]["segment"] == {"locale": "de-DE"}
    assert data_client.post("/api/v1/alert-rules", body, format="json").status_code in (403, 404)
    assert (
        client_for(token=token_for(reviewer.user))
        .get(f"/api/v1/alert-rules/{rule['id']}")
        .status_code
        == 200
    )
    assert (
        client_for(token=token_for(reviewer.user))
        .patch(f"/api/v1/alert-rules/{rule['id']}", {"name": "x"}, format="json")
        .status_code
        == 403
    )
    for bad, field in [
        ({**body, "window_minutes": 90}, "window_minutes"),
        ({**body, "condition": {"above": 0.1, "baseline": {"previous_days": 7}}}, "condition"),
        ({**body, "metric": "happiness"}, "metric"),
        ({**body, "notify_emails": ["not-an-email"]}, "notify_emails"),
        ({**body, "colour": "red"}, "colour"),
        ({**body, "filter": {"segment": {"a": "1", "b": "2"}}}, "filter"),
    ]:
        r = admin_client.post("/api/v1/alert-rules", bad, format="json")
        assert r.status_code == 400, (bad, r.json())
        assert r.json()["errors"][0]["field"].startswith(field), (field, r.json())
    r = admin_client.patch(
        f"/api/v1/alert-rules/{rule['id']}",
        {"condition": {"baseline": {"previous_days": 7}, "min_lift": 0.02, "alpha": 0.01}},
        format="json",
    )
    assert r.status_code == 200, r.json()
    assert (
        r.json()["condition"]["baseline"] == {"previous_days": 7}
        and r.json()["name"] == "dispute spike"
    )
    r = admin_client.post(f"/api/v1/alert-rules/{rule['id']}/evaluate")
    assert r.status_code == 200 and r.json() == {
        "state": "ok",
        "value": None,
        "ci_low": None,
        "ci_high": None,
        "volume": 0,
        "event": None,
    }
    assert data_client.get(f"/api/v1/alert-rules/{rule['id']}/events").json() == []
    assert (
        data_client.get("/api/v1/alert-rules", {"project": project.slug}).json()[0]["id"]
        == rule["id"]
    )
    assert admin_client.get("/api/v1/alert-rules/999999").status_code == 404
    assert admin_client.delete(f"/api/v1/alert-rules/{rule['id']}").status_code == 204
    assert admin_client.get(f"/api/v1/alert-rules/{rule['id']}").status_code == 404
