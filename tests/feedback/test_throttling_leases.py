"""Leases: a key with a high rate takes several requests from its Redis counter at once.

feedback/api/throttling.py: only keys allowed at least 1,000 requests per window lease (at most
``REDRESS_INGEST_LEASE``, at most 1/1,000 of the rate); the process then lets the rest of the
lease through without a round trip to Redis, for at most ``LEASE_SECONDS``. Leases exist only
on the Redis cache (the intake views' one-command lookup); elsewhere every request is counted
on its own, which the other throttling tests cover.
"""

from __future__ import annotations

import time

import pytest
from django.core.cache import cache

from feedback.api import throttling
from feedback.api.throttling import ingest_key_checked, lease_size
from feedback.models import ApiKey, Feedback
from feedback.services.keys import apikey_revoke, hash_key
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def test_only_keys_with_a_high_rate_lease(settings):
    settings.REDRESS_INGEST_LEASE = 50
    assert lease_size(600) == 1  # the default rate: every request asks Redis
    assert lease_size(1_999) == 1
    assert lease_size(2_000) == 2  # at most 1/1,000 of the rate
    assert lease_size(100_000) == 50  # at most the setting
    settings.REDRESS_INGEST_LEASE = 1
    assert lease_size(100_000_000) == 1  # 1 turns leases off


@pytest.fixture
def on_redis(settings):
    if not settings.CACHES["default"]["BACKEND"].endswith("RedisCache"):
        pytest.skip("leases exist only on the Redis cache (set CELERY_BROKER_URL)")
    throttling._leases.clear()
    yield
    throttling._leases.clear()


def counter_value(raw_key: str, rate: str) -> int:
    duration = throttling.parse_rate(rate)[1]
    key, _ = throttling._counter_key(hash_key(raw_key), duration, time.time())
    return int(cache.get(key) or 0)


def test_a_lease_takes_requests_from_the_counter_at_once(settings, on_redis, ingest_key):
    settings.REDRESS_INGEST_RATE = "100000/minute"
    settings.REDRESS_INGEST_LEASE = 20

    first = ingest_key_checked(ingest_key)
    assert first[0] is not None and first[1] is None
    assert counter_value(ingest_key, "100000/minute") == 20  # one round trip, 20 taken
    for _ in range(19):  # the rest of the lease: no round trip, the counter does not move
        assert ingest_key_checked(ingest_key)[1] is None
    assert counter_value(ingest_key, "100000/minute") == 20
    ingest_key_checked(ingest_key)  # the 21st request takes a new lease
    assert counter_value(ingest_key, "100000/minute") == 40


def test_a_leased_key_gets_exactly_its_rate_in_one_process(settings, on_redis, ingest_key):
    settings.REDRESS_INGEST_RATE = "5000/minute"  # leases of 5
    settings.REDRESS_INGEST_LEASE = 50

    allowed = 0
    waits = set()
    for _ in range(5_010):
        context, wait = ingest_key_checked(ingest_key)
        assert context is not None
        if wait is None:
            allowed += 1
        else:
            waits.add(wait)

    assert allowed == 5_000
    assert waits and all(1 <= wait <= 61 for wait in waits)


def test_a_partial_lease_stops_at_the_rate(settings, on_redis, ingest_key):
    settings.REDRESS_INGEST_RATE = "3000/minute"  # leases of 3
    duration = throttling.parse_rate("3000/minute")[1]
    key, _ = throttling._counter_key(hash_key(ingest_key), duration, time.time())
    cache.set(key, 2_998, duration + 1)  # another process used all but 2

    results = [ingest_key_checked(ingest_key)[1] is None for _ in range(4)]

    assert results == [True, True, False, False]


@pytest.fixture
def logged(project, prediction_factory):
    return prediction_factory(project=project).external_id


def test_a_revoked_key_ends_with_its_lease(
    settings, on_redis, project, make_key, logged, django_capture_on_commit_callbacks
):
    settings.REDRESS_INGEST_RATE = "100000/minute"
    settings.REDRESS_INGEST_LEASE = 50
    throttling_seconds = 0.3
    saved = throttling.LEASE_SECONDS
    throttling.LEASE_SECONDS = throttling_seconds
    try:
        raw = make_key(project, ["ingest"])
        client = client_for(raw)
        body = {"prediction": logged, "kind": "report"}
        assert client.post("/api/v1/feedback", body, format="json").status_code == 201
        with django_capture_on_commit_callbacks(execute=True):
            apikey_revoke(key=ApiKey.objects.get(project=project, prefix=raw[:12]))

        # The lease taken before the revocation still serves this process, for a while only.
        assert client.post("/api/v1/feedback", body, format="json").status_code == 201
        time.sleep(throttling_seconds + 0.05)
        refused = client.post("/api/v1/feedback", body, format="json")
    finally:
        throttling.LEASE_SECONDS = saved

    assert refused.status_code == 401
    assert Feedback.objects.count() == 2


def test_an_unknown_key_takes_no_lease_and_is_not_counted(settings, on_redis):
    settings.REDRESS_INGEST_RATE = "100000/minute"
    raw = "rdr_" + "x" * 43

    assert ingest_key_checked(raw) == (None, None)
    assert ingest_key_checked(raw) == (None, None)

    assert counter_value(raw, "100000/minute") == 0
    assert throttling._leases == {}


def test_each_test_prefix_has_its_own_leases(settings, on_redis, ingest_key):
    settings.REDRESS_INGEST_RATE = "100000/minute"
    ingest_key_checked(ingest_key)
    (lease_key,) = throttling._leases
    assert lease_key == cache.make_key("apikey:" + hash_key(ingest_key))
