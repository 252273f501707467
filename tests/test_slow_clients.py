"""The documented production set-up survives slow clients: ``config/serve.py`` (nginx in front of
gunicorn), real processes on real sockets.

Twenty clients start a POST and trickle its body a few bytes a second. Straight to gunicorn
they hold every worker thread (one worker of 8 threads here), and a plain GET waits behind
them; through nginx, which reads bodies whole before gunicorn sees them, the GET answers at
once. Also: nginx's own refusals (413, gunicorn down) come in the API's error shape.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parent.parent
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SLOW_CLIENTS = 20
BODY_BYTES = 4000
# A form POST with a CSRF cookie: Django's CSRF check reads the whole form body before it can
# decide, as any view that takes a body does, and needs no database (a tmp SQLite is empty).
CSRF_TOKEN = b"abcdefghijklmnopqrstuvwxyz012345"

pytestmark = pytest.mark.skipif(
    not os.access(NGINX, os.X_OK), reason="nginx not installed (apt-get install nginx-light)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_response(s: socket.socket) -> tuple[bytes, bytes]:
    """(head, body) of one response, read up to its Content-Length: not to the end of the
    connection, which nginx keeps open for a while after a refusal to drain the unread body
    (lingering close, 5 s)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")[1:]
            if line.lower().startswith(b"content-length:")
        ),
        None,
    )
    while length is None or len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return head, body


def get(port: int, path: str, timeout: float) -> tuple[int, bytes, float]:
    """One HTTP/1.1 request on a fresh connection: (status, body, seconds)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body, time.monotonic() - started


class SlowUploads:
    """``count`` connections each POSTing a ``BODY_BYTES`` form, a few bytes a second."""

    def __init__(self, port: int, count: int) -> None:
        self.sockets = []
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(
                b"POST /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Cookie: csrftoken=" + CSRF_TOKEN + b"\r\nX-CSRFToken: " + CSRF_TOKEN + b"\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: " + str(BODY_BYTES).encode() + b"\r\n\r\na="
            )
            self.sockets.append(s)
        self.sent = 1
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.trickle, daemon=True)
        self.thread.start()

    def trickle(self) -> None:
        while not self.stopped.wait(0.5):
            for s in self.sockets:
                with contextlib.suppress(OSError):
                    s.sendall(b"aa")
            self.sent += 2

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()
        for s in self.sockets:
            s.close()


@pytest.fixture
def served(tmp_path) -> Iterator[tuple[int, int]]:
    """config/serve.py on free ports: (nginx port, gunicorn port)."""
    listen, app = free_port(), free_port()
    env = {
        **os.environ,
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": "slow-clients-test",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "REDRESS_VAR_DIR": str(tmp_path / "var"),
    }
    env.pop("DATABASE_URL", None)  # /healthz reads no database; nothing here writes one
    # What production does before serving: nginx serves the copies (the widget test below). In
    # a directory nginx's workers may read: as root they drop to another user, and this run's
    # TMPDIR (tests/conftest.py) and tmp_path are 0700.
    public = Path(tempfile.mkdtemp(prefix="redress-static-", dir="/tmp"))
    public.chmod(0o755)
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
        cwd=BASE_DIR, env={**env, "REDRESS_VAR_DIR": str(public)}, check=True,
    )
    process = subprocess.Popen(
        [
            *(sys.executable, "config/serve.py", "--workers", "1"),
            *("--run-dir", str(tmp_path / "serve")),
            *("--listen", f"127.0.0.1:{listen}", "--app", f"127.0.0.1:{app}"),
            *("--static-root", str(public / "static")),
        ],
        cwd=BASE_DIR,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if get(listen, "/healthz", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None, "config/serve.py exited"
            assert time.monotonic() < deadline, "nginx + gunicorn did not answer within 60 s"
            time.sleep(0.3)
        yield listen, app
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=40) == 0
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            shutil.rmtree(public, ignore_errors=True)


def test_other_requests_answer_within_a_second_while_20_uploads_trickle_in(served):
    listen, app = served

    # given: 20 slow uploads in flight through nginx
    uploads = SlowUploads(listen, SLOW_CLIENTS)
    try:
        time.sleep(2)  # they are all past their headers, a few bytes into their bodies

        # when / then: other requests through nginx answer at once, GET and POST
        timings = []
        for _ in range(10):
            status, body, seconds = get(listen, "/healthz", timeout=5)
            assert (status, body) == (200, b"ok")
            timings.append(seconds)
        assert max(timings) < 1.0, timings
        with socket.create_connection(("127.0.0.1", listen), timeout=5) as s:
            started = time.monotonic()
            s.sendall(
                b"POST /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
            )
            answer = b"".join(iter(lambda: s.recv(65536), b""))
        # Django read the body and answered (CSRF refuses a cookie-less POST to a page view)
        assert answer.startswith(b"HTTP/1.1 403"), answer[:300]
        assert b"CSRF" in answer
        assert time.monotonic() - started < 1.0
        assert uploads.sent >= 5  # the uploads were still trickling meanwhile
    finally:
        uploads.close()

    # and the same 20 straight to gunicorn hold all its threads: a GET waits behind them
    uploads = SlowUploads(app, SLOW_CLIENTS)
    try:
        time.sleep(2)
        with pytest.raises(TimeoutError):
            get(app, "/healthz", timeout=1.0)
    finally:
        uploads.close()
    # once they are gone, gunicorn answers again
    assert get(listen, "/healthz", timeout=10)[:2] == (200, b"ok")


def test_nginx_refusals_are_in_the_error_shape(served, tmp_path):
    listen, _ = served
    # an oversized body: Django's limit is 1 MiB (its own 413), nginx stops what passes 2 MiB
    with socket.create_connection(("127.0.0.1", listen), timeout=5) as s:
        s.sendall(
            b"POST /api/v1/feedback HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: 3000000\r\n\r\n"
        )
        head, body = read_response(s)
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b'"code": "too_large"' in body

    # gunicorn not answering: 503 with Retry-After, in the error shape (nginx alone, here)
    port, dead = free_port(), free_port()
    run_dir = tmp_path / "alone"
    config = subprocess.run(
        [
            *(sys.executable, "config/serve.py", "--print-config", "--run-dir", str(run_dir)),
            *("--listen", f"127.0.0.1:{port}", "--app", f"127.0.0.1:{dead}"),
        ],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    run_dir.mkdir()
    (run_dir / "nginx.conf").write_text(config)
    nginx = subprocess.Popen(
        [NGINX, "-p", str(run_dir), "-c", str(run_dir / "nginx.conf"), "-g", "daemon off;"]
    )
    try:
        for _ in range(50):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.sendall(
                        b"GET /api/v1/queues HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                    )
                    answer = b"".join(iter(lambda: s.recv(65536), b""))
                break
            except ConnectionRefusedError:
                time.sleep(0.1)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503"), head
        assert b"\r\nRetry-After: 5" in head
        assert b'"code": "unavailable"' in body
    finally:
        nginx.send_signal(signal.SIGQUIT)
        nginx.wait(timeout=10)


def test_nginx_serves_the_feedback_widget_to_other_origins(served):
    listen, _ = served
    widget = (BASE_DIR / "feedback" / "static" / "redress" / "widget.js").read_bytes()
    with socket.create_connection(("127.0.0.1", listen), timeout=5) as s:
        s.sendall(
            b"GET /static/redress/widget.js HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Origin: https://shop.example\r\nConnection: close\r\n\r\n"
        )
        head, _, body = b"".join(iter(lambda: s.recv(65536), b"")).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert body == widget
    assert b"\r\nAccess-Control-Allow-Origin: *" in head
    assert b"javascript" in head.lower()
