"""PostgreSQL: concurrent rollup steps (two beats at once) never double-count."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connection

from monitoring.rollups import rollups_rebuild, rollups_step

from .conftest import make_stream, resolve_some
from .test_rollups import snapshot

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
FUTURE = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def test_concurrent_steps_equal_one_rebuild(project):
    make_stream(project, seed=41, n=1500)
    resolve_some(project)
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def step():
        try:
            barrier.wait()
            rollups_step(now=FUTURE)
        except BaseException as error:  # reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=step) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    stepped = snapshot()
    assert stepped[0]  # something was counted
    rollups_rebuild()
    assert snapshot() == stepped
