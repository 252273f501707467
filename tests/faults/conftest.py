"""Faults made real: a Redis server of the test's own, stopped and frozen; a PostgreSQL that
refuses. Never the shared Redis on 6379: each test starts ``redis-server`` on a free port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

from feedback.api import throttling
from feedback.selectors import fallback_contexts

REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """A ``redis-server`` on 127.0.0.1 that a test may stop, start again, freeze and thaw."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None
        self.frozen = False

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *(REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.folder)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
            finally:
                client.close()

    def stop(self) -> None:
        """SIGTERM, as an operator's ``systemctl stop`` (no persistence: its data is gone)."""
        assert self.process is not None
        self.thaw()
        self.process.terminate()
        self.process.wait(timeout=10)
        self.process = None

    def freeze(self) -> None:
        """SIGSTOP: connections are still accepted by the kernel, nothing is ever answered."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        if self.frozen and self.process is not None:
            os.kill(self.process.pid, signal.SIGCONT)
        self.frozen = False

    def close(self) -> None:
        if self.process is not None:
            self.thaw()
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


# Short for the tests, so that recovery is seen within a test's time.
RETRY_SECONDS = 0.5


@pytest.fixture
def own_redis(settings, tmp_path):
    """A Redis of this test's own as the default cache, configured as in production."""
    if REDIS_SERVER is None:
        pytest.skip("no redis-server on this machine (apt-get install redis-server)")
    server = RedisServer(tmp_path)
    server.start()
    settings.CACHES = {
        "default": {
            "BACKEND": "feedback.redis_cache.ResilientRedisCache",
            "LOCATION": server.url,
            "KEY_PREFIX": "faults",
            "OPTIONS": {
                "socket_connect_timeout": settings.REDRESS_REDIS_TIMEOUT,
                "socket_timeout": settings.REDRESS_REDIS_TIMEOUT,
            },
        }
    }
    settings.REDRESS_REDIS_RETRY_SECONDS = RETRY_SECONDS
    throttling._leases.clear()
    throttling._local_counts.clear()
    fallback_contexts.clear()
    try:
        yield server
    finally:
        server.close()
        throttling._leases.clear()
        throttling._local_counts.clear()
        fallback_contexts.clear()
