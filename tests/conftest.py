"""Fixtures shared by every suite.

Tests run against whatever the environment names: SQLite and a file cache by default,
PostgreSQL (``DATABASE_URL``) and Redis (``CELERY_BROKER_URL`` / ``CACHE_URL``) in CI. Each test
gets a cache of its own (a fresh key prefix on Redis, a fresh folder otherwise), so counters and
cached key lookups never leak between tests.
"""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from pytest_factoryboy import register
from rest_framework.test import APIClient

from feedback.models import Membership
from feedback.services.keys import apikey_create
from feedback.services.projects import membership_grant
from feedback.services.tokens import personal_token_create

from .factories import PredictionFactory, ProjectFactory, UserFactory

register(ProjectFactory)
register(PredictionFactory)
register(UserFactory)


def token_for(user) -> str:
    """A person's API token (``Authorization: Token …``), made as drf_create_token makes it."""
    return personal_token_create(user=user, replace=True)


def on_postgres() -> bool:
    return connection.vendor == "postgresql"


def pytest_collection_modifyitems(config, items):
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        return
    skip = pytest.mark.skip(reason="PostgreSQL only (set DATABASE_URL); SQLite has no equivalent")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


def _transactional(request) -> bool:
    marker = request.node.get_closest_marker("django_db")
    if marker is not None and (marker.kwargs.get("transaction") or marker.args[:1] == (True,)):
        return True
    return bool({"transactional_db", "live_server"} & set(request.fixturenames))


@pytest.fixture(autouse=True)
def _purge_committed_gold(request):
    """Tests that commit (transactional, live server) end with a TRUNCATE of every table, which
    PostgreSQL refuses while published gold exists (labeling migration 0005). Purge it first,
    through the service, as an operator would: exports holding a version go, then each set."""
    if not _transactional(request):
        yield
        return
    request.getfixturevalue("transactional_db")  # so the flush runs after this teardown
    yield
    if not on_postgres():
        return
    from labeling.models import Export, GoldSet
    from labeling.services.goldsets import goldset_purge

    Export.objects.filter(gold_version__isnull=False).delete()
    for gold_set in GoldSet.objects.filter(versions__status="published").distinct():
        goldset_purge(gold_set=gold_set, reason="test teardown")


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # PBKDF2's 10^6 iterations are the point in production and pure cost in tests.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _isolated_cache(settings, tmp_path):
    backend = settings.CACHES["default"]["BACKEND"]
    if backend.endswith("RedisCache"):
        settings.CACHES = {
            "default": {**settings.CACHES["default"], "KEY_PREFIX": f"test-{uuid.uuid4().hex}"}
        }
    else:
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                "LOCATION": str(tmp_path / "cache"),
            }
        }
    yield


@pytest.fixture
def project(project_factory):
    return project_factory()


@pytest.fixture
def other_project(project_factory):
    return project_factory()


def _key(project, scopes):
    _, raw = apikey_create(project=project, scopes=scopes, name="test")
    return raw


@pytest.fixture
def ingest_key(project):
    return _key(project, ["ingest"])


@pytest.fixture
def data_key(project):
    return _key(project, ["data"])


@pytest.fixture
def make_key():
    return _key


def client_for(raw_key: str | None = None, token: str | None = None) -> APIClient:
    client = APIClient()
    if raw_key:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    elif token:
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.fixture
def ingest_client(ingest_key):
    return client_for(ingest_key)


@pytest.fixture
def data_client(data_key):
    return client_for(data_key)


@pytest.fixture
def member(project):
    """A data scientist of ``project`` with a DRF token."""
    membership = membership_grant(
        project=project, username=f"ds-{uuid.uuid4().hex[:8]}", role=Membership.Role.DATA_SCIENTIST
    )
    membership.user.token = token_for(membership.user)
    return membership.user
