"""Rate limits per API key: 429 with Retry-After past REDRESS_INGEST_RATE."""

from __future__ import annotations

import pytest

from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def test_past_the_rate_a_key_gets_429_with_retry_after(settings, ingest_key):
    settings.REDRESS_INGEST_RATE = "5/minute"
    client = client_for(ingest_key)

    statuses = [client.get("/api/v1/categories").status_code for _ in range(7)]

    assert statuses == [200] * 5 + [429] * 2
    refused = client.get("/api/v1/categories")
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 61
    assert refused.json()["errors"][0]["code"] == "throttled"


def test_each_key_has_its_own_budget(settings, project, make_key):
    settings.REDRESS_INGEST_RATE = "2/minute"
    first, second = (
        client_for(make_key(project, ["ingest"])),
        client_for(make_key(project, ["ingest"])),
    )

    assert [first.get("/api/v1/categories").status_code for _ in range(3)] == [200, 200, 429]
    assert second.get("/api/v1/categories").status_code == 200


def test_the_rate_is_read_from_the_setting(settings, ingest_key):
    settings.REDRESS_INGEST_RATE = "100/second"
    client = client_for(ingest_key)

    assert {client.get("/api/v1/categories").status_code for _ in range(50)} == {200}
