"""Fixtures shared by every suite.

Tests run against whatever the environment names: SQLite and a file cache by default,
PostgreSQL (``DATABASE_URL``) and Redis (``CELERY_BROKER_URL`` / ``CACHE_URL``) in CI. Each test
gets a cache of its own (a fresh key prefix on Redis, a fresh folder otherwise), so counters and
cached key lookups never leak between tests.

Nothing of a test run lands where ``make run`` keeps its state (``pytest_configure``): the
embedded broker, the file cache, stored files (exports), temporary files and the beat
schedule live in a temporary folder of the run, and on a Redis broker the run's tasks go to a
queue of its own, which no worker of ``make run`` listens to. Before, a dev worker ran the
tests' tasks against the dev database.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

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


def pytest_configure(config):
    """Point the broker, the file cache, stored files and beat at this run's own places.

    Django's settings are loaded by now (pytest-django) but nothing has used them yet: the
    Celery app reads its configuration, and the storage and cache handlers build their
    backends, on first use."""
    from django.conf import settings

    from config.celery import app

    run_dir = Path(tempfile.mkdtemp(prefix="redress-tests-"))
    config.add_cleanup(lambda: shutil.rmtree(run_dir, ignore_errors=True))
    os.environ["REDRESS_VAR_DIR"] = str(run_dir)  # for the processes the tests start
    # Temporary files too (export builds name theirs after the database, and SQLite's
    # in-memory test database has the same name in every run on the machine).
    temp_dir = run_dir / "tmp"
    temp_dir.mkdir()
    tempfile.tempdir = os.environ["TMPDIR"] = str(temp_dir)
    queue = f"redress-test-{uuid.uuid4().hex[:12]}"
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    settings.CELERY_BEAT_SCHEDULE_FILENAME = str(run_dir / "celerybeat-schedule")
    transport_options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {})
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        broker_dir = run_dir / "celery-broker"
        transport_options = settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
            **transport_options,
            "data_folder_in": str(broker_dir / "queue"),
            "data_folder_out": str(broker_dir / "queue"),
            "processed_folder": str(broker_dir / "processed"),
            "control_folder": str(broker_dir / "control"),
        }
        for folder in ("queue", "processed", "control"):
            (broker_dir / folder).mkdir(parents=True)
    else:
        config.add_cleanup(lambda: _queue_purge(app))
    app.conf.update(
        task_default_queue=queue,
        broker_transport_options=transport_options,
        beat_schedule_filename=settings.CELERY_BEAT_SCHEDULE_FILENAME,
    )
    default_cache = settings.CACHES["default"]
    if default_cache["BACKEND"].endswith("FileBasedCache"):
        settings.CACHES = {"default": {**default_cache, "LOCATION": str(run_dir / "cache")}}
    storage = settings.STORAGES["default"]
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            **storage,
            "OPTIONS": {**storage.get("OPTIONS", {}), "location": str(run_dir / "media")},
        },
    }


def _queue_purge(app) -> None:
    """Drop what the run left in its queue on the shared broker."""
    try:
        with app.connection_for_write() as connection:
            connection.default_channel.queue_purge(app.conf.task_default_queue)
    except Exception:  # the broker is gone: nothing to clean
        pass


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
