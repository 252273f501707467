"""A real HTTP receiver on loopback for webhook tests and the bench: a threaded server that
records every request (path, headers, body) and answers as a test scripts it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)


# A behaviour gets the request's index (0-based) and the request; returns (status, headers,
# body) or None to hang (never answer: the handler sleeps until the server stops).
Behaviour = Callable[[int, Received], tuple[int, dict[str, str], bytes] | None]


def always(status: int = 200, headers: dict[str, str] | None = None) -> Behaviour:
    return lambda i, request: (status, headers or {}, b"ok")


def sequence(*statuses: int | None) -> Behaviour:
    """Answer the n-th request with statuses[n] (None: hang); the last one repeats."""

    def behave(i: int, request: Received):
        status = statuses[min(i, len(statuses) - 1)]
        return None if status is None else (status, {}, b"")

    return behave


class Receiver:
    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour = behaviour or always()
        self.requests: list[Received] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real endpoints do
            disable_nagle_algorithm = True  # as real servers do (nginx: tcp_nodelay on)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = Received(self.path, dict(self.headers.items()), self.rfile.read(length))
                with receiver.lock:
                    index = len(receiver.requests)
                    receiver.requests.append(request)
                answer = receiver.behaviour(index, request)
                if answer is None:
                    receiver.stopping.wait(60)
                    self.close_connection = True
                    return
                status, headers, body = answer
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
