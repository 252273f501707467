"""A test run keeps out of the dev server's way (tests/conftest.py, ``pytest_configure``).

Before: ``make test`` while ``make run`` served published the tests' Celery tasks into the dev
server's filesystem broker under ``var/``, and the dev worker ran them against the dev
database (61 export tasks, some with the ids of real dev exports). Now the embedded broker,
the file cache and stored files are the run's own folder's, and on Redis the run's tasks go to
a queue of its own that no dev worker consumes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from django.conf import settings
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from config.celery import app

VAR_DIR = Path(settings.VAR_DIR).resolve()


def files_under(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()} if folder.exists() else set()


def is_under_var(location: str | Path) -> bool:
    return Path(location).resolve().is_relative_to(VAR_DIR)


def test_tasks_go_to_the_runs_own_queue_and_never_to_var():
    from labeling.tasks import exports_recover_task

    queue = app.conf.task_default_queue
    broker_files = files_under(VAR_DIR / "celery-broker")

    with app.connection_for_read() as connection:
        connection.SimpleQueue(queue).clear()  # what earlier tests of the run left there

    exports_recover_task.delay()  # what any enqueue after commit does

    with app.connection_for_read() as connection:
        message = connection.SimpleQueue(queue).get(timeout=5)
        assert message.headers["task"] == "labeling.tasks.exports_recover_task"
        message.ack()
    assert queue.startswith("redress-test-")  # a dev worker consumes "celery"
    assert files_under(VAR_DIR / "celery-broker") == broker_files
    folders = [
        value
        for name, value in app.conf.broker_transport_options.items()
        if name.endswith("folder") or name.startswith("data_folder")
    ]
    assert app.conf.broker_url.startswith("redis") or folders
    assert not any(is_under_var(folder) for folder in folders)
    assert not is_under_var(app.conf.beat_schedule_filename)


@pytest.mark.django_db
def test_the_cache_is_the_runs_own(settings):
    cache.set("isolation-probe", 1)
    assert cache.get("isolation-probe") == 1
    backend = settings.CACHES["default"]
    if backend["BACKEND"].endswith("FileBasedCache"):
        assert not is_under_var(backend["LOCATION"])
        assert any(files_under(Path(backend["LOCATION"])))
    else:  # Redis: a key prefix of this test's own
        assert backend["KEY_PREFIX"].startswith("test-")


def test_stored_files_go_to_the_runs_own_folder():
    name = default_storage.save("exports/isolation-probe.txt", ContentFile(b"probe"))
    try:
        assert not is_under_var(default_storage.path(name))
        assert Path(default_storage.path(name)).read_bytes() == b"probe"
    finally:
        default_storage.delete(name)


def test_temporary_files_are_the_runs_own():
    # Export builds clean up "stale" files named after the database and the export id; in
    # a shared /tmp, two runs on SQLite's in-memory database removed each other's files.
    run_dir = Path(default_storage.location).resolve().parent
    assert run_dir.name.startswith("redress-tests-")
    assert Path(tempfile.gettempdir()).resolve() == run_dir / "tmp"
    with tempfile.NamedTemporaryFile() as handle:
        assert Path(handle.name).resolve().parent == run_dir / "tmp"
