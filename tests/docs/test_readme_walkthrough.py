"""The README's walkthrough runs as written.

Exactly the README's ```sh blocks, in order, in one bash shell (``set -e``), against what
``make run`` starts on a fresh database: migrations, ``seed_demo``, a Celery worker with
embedded beat and ``runserver``. Only the address is changed (a free port instead of 8000). Every
curl answer is also written to a log (curl is wrapped with ``--fail-with-body``, so a 4xx or 5xx
stops the shell); the test fails on a non-zero exit, or on ``not_found`` anywhere in what the
shell printed or the server answered.

Embedded default: SQLite and the filesystem broker in a temporary folder. With ``DATABASE_URL``
set (PostgreSQL): a database of its own, created and dropped here, and the broker of
``CELERY_BROKER_URL``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PYTHON = sys.executable
CELERY = str(Path(sys.executable).with_name("celery"))
SHELL_TIMEOUT = 240  # seconds; the walkthrough takes well under a minute


def sh_blocks(markdown: str) -> list[str]:
    """The bodies of the ```sh fences, in order (```bash, ```console… are not the walkthrough)."""
    return re.findall(r"^```sh\n(.*?)^```[ \t]*$", markdown, flags=re.MULTILINE | re.DOTALL)


def test_the_walkthrough_blocks_are_found():
    blocks = sh_blocks(README.read_text())
    assert len(blocks) >= 10
    script = "\n".join(blocks)
    # The story, in order: keys, a dispute resolved, a queue labeled, gold, an export, an audit.
    steps = ["create_api_key", "/resolve", "/claim", "/publish", "/exports", "/audits"]
    positions = [script.index(step) for step in steps]
    assert positions == sorted(positions)
    assert "127.0.0.1:8000" in blocks[0]
    # No hard-coded ids of objects the server creates: every one is captured from an answer.
    assert not re.search(r"/(disputes|queues|items|sampling-runs|exports|audits)/\d", script)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    # A session of its own, so stopping it stops its children (the worker's pool, beat).
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _run(args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"


@pytest.fixture
def fresh_environment(tmp_path):
    """The environment ``make run`` gets, pointing at a fresh database and state folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_TEST"))}
    env.update(
        REDRESS_VAR_DIR=str(tmp_path / "var"),
        DJANGO_SETTINGS_MODULE="config.settings",
        DJANGO_DEBUG="true",
        PYTHONUNBUFFERED="1",
    )
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    database_url = os.environ.get("DATABASE_URL")
    if not database_url:
        env.pop("DATABASE_URL", None)
        yield env
        return
    import psycopg

    parts = urlsplit(database_url)
    name = f"walkthrough_{uuid.uuid4().hex[:12]}"
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    env["DATABASE_URL"] = urlunsplit(parts._replace(path=f"/{name}"))
    try:
        yield env
    finally:
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_the_readme_walkthrough_runs_as_written(fresh_environment, tmp_path):
    env = fresh_environment
    port = _free_port()
    # What `make run` does, in its order.
    _run([PYTHON, "manage.py", "migrate", "--noinput"], env)
    _run([PYTHON, "manage.py", "seed_demo"], env)
    worker = _start(
        [CELERY, "-A", "config", "worker", "--beat", "--loglevel=INFO", "--concurrency=1"],
        env, tmp_path / "worker.log",
    )
    server = _start(
        [PYTHON, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        env, tmp_path / "server.log",
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    log = (tmp_path / "server.log").read_text()
                    pytest.fail(f"the server did not start:\n{log}")
                time.sleep(0.3)

        curl_log = tmp_path / "curl.log"
        blocks = [block.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for block in
                  sh_blocks(README.read_text())]
        harness = (
            "set -e\n"
            # Every answer goes to the log as well as wherever the block sends it; an HTTP
            # error status is a failed command.
            f"curl() {{ command curl --fail-with-body \"$@\" | tee -a '{curl_log}'; "
            "return ${PIPESTATUS[0]}; }\n"
        )
        script = harness + "".join(
            f"\necho '>>> block {n}' >&2\n{block}" for n, block in enumerate(blocks, 1)
        )
        (tmp_path / "walkthrough.sh").write_text(script)
        try:
            done = subprocess.run(
                ["bash", str(tmp_path / "walkthrough.sh")], cwd=ROOT, env=env,
                capture_output=True, text=True, timeout=SHELL_TIMEOUT,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"the walkthrough hung (a poll never ending?):\n{exc.stdout}\n{exc.stderr}")
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"the walkthrough stopped (exit {done.returncode}):\n{output}"
        answers = curl_log.read_text() if curl_log.exists() else ""
        assert "not_found" not in output + answers, output
        # It did what it says: a dispute upheld, nine items labeled twice, gold published, an
        # export read back, an audit done.
        assert '"status":"upheld"' in answers
        assert '"complete":9' in answers and '"labels":18' in answers
        assert '"status":"published"' in answers
        assert re.search(r'"status":"done".*"rows":9', answers)
        assert "Fairness audit" in output
        assert not (ROOT / "batch.jsonl").exists() and not (ROOT / "audit.md").exists()
    finally:
        _stop(server)
        _stop(worker)
