"""Outbound HTTP for webhook deliveries, on the standard library.

The host is resolved first and EVERY address it resolves to is checked (unless
``REDRESS_WEBHOOK_ALLOW_PRIVATE``): one private, loopback, link-local or otherwise non-global
address refuses the target. The connection then goes to the address that was checked, with the
``Host`` header (and TLS SNI and certificate check) naming the original host, so a DNS answer
cannot change between the check and the connect. Redirects are never followed (http.client
does not), and every socket operation has a timeout.

Connections are kept alive per process and target address, so a burst of deliveries to one
endpoint reuses one TCP (and TLS) connection.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_RESPONSE_BYTES = 64 * 1024  # read at most this much of a response; the rest is dropped
SNIPPET_CHARS = 300  # kept in the attempt log


class TransportError(Exception):
    """A delivery attempt that got no HTTP response: ``code`` says why."""

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"{code}: {detail}")


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    snippet: str


def url_problem(url: str) -> str | None:
    """Why ``url`` can never be a webhook target (None when it may be)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  raises on a bad port
    except ValueError as exc:
        return f"not a URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return "the URL must start with https:// (or http://)"
    if not parts.hostname:
        return "the URL names no host"
    if parts.username or parts.password:
        return "credentials in the URL are not allowed; use the signature to authenticate"
    return None


def address_allowed(address: str) -> bool:
    """Only globally routable unicast addresses (no private, loopback, link-local, CGNAT,
    multicast, reserved or unspecified ones), IPv4-mapped IPv6 judged as the IPv4 inside."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def resolve(host: str, port: int, *, allow_private: bool) -> str:
    """The address to connect to, after checking every address ``host`` resolves to."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise TransportError("dns", f"{host} does not resolve: {exc}") from exc
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise TransportError("dns", f"{host} resolves to no address")
    if not allow_private:
        for address in addresses:
            if not address_allowed(address):
                raise TransportError(
                    "private_address",
                    f"{host} resolves to {address}, a private, loopback or link-local address "
                    "(REDRESS_WEBHOOK_ALLOW_PRIVATE=true allows it)",
                )
    return addresses[0]


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to a checked address, with SNI and certificate verification for the real host."""

    def __init__(self, address: str, port: int, *, server_hostname: str, timeout: float) -> None:
        super().__init__(address, port, timeout=timeout, context=ssl.create_default_context())
        self._server_hostname = server_hostname

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self._server_hostname)


_pool = threading.local()


def _connections() -> dict:
    if not hasattr(_pool, "connections"):
        _pool.connections = {}
    return _pool.connections


def _open(scheme: str, address: str, port: int, host: str, timeout: float):
    if scheme == "https":
        return _PinnedHTTPSConnection(address, port, server_hostname=host, timeout=timeout)
    return http.client.HTTPConnection(address, port, timeout=timeout)


def close_all() -> None:
    for conn in _connections().values():
        conn.close()
    _connections().clear()


def post(
    url: str, body: bytes, headers: dict[str, str], *, timeout: float, allow_private: bool
) -> Response:
    """POST ``body`` to ``url``; a response of any status, or TransportError."""
    problem = url_problem(url)
    if problem:
        raise TransportError("bad_url", problem)
    parts = urlsplit(url)
    scheme, host = parts.scheme, parts.hostname
    port = parts.port or (443 if scheme == "https" else 80)
    address = resolve(host, port, allow_private=allow_private)
    default_port = 443 if scheme == "https" else 80
    host_header = f"[{host}]" if ":" in host else host
    if port != default_port:
        host_header += f":{port}"
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    key = (scheme, address, port, host)
    pooled = _connections().pop(key, None)
    for conn in ([pooled] if pooled is not None else []) + [None]:
        reused = conn is not None
        if conn is None:
            conn = _open(scheme, address, port, host, timeout)
        conn.timeout = timeout
        try:
            if conn.sock is None:
                conn.connect()
                # Headers and body leave in two writes: without this, Nagle's algorithm holds
                # the body until the headers are acknowledged, a delayed ACK away (~40 ms).
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.sock.settimeout(timeout)
            conn.putrequest("POST", path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", host_header)
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            response = conn.getresponse()
            data = response.read(MAX_RESPONSE_BYTES)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
            conn.close()
            if reused:
                continue  # the kept-alive connection was closed by the server: a fresh one
            raise TransportError("connection_closed", str(exc) or type(exc).__name__) from exc
        except TimeoutError as exc:
            conn.close()
            raise TransportError("timeout", f"no answer within {timeout:g} s") from exc
        except ConnectionRefusedError as exc:
            conn.close()
            raise TransportError("connection_refused", str(exc)) from exc
        except ssl.SSLError as exc:
            conn.close()
            raise TransportError("tls", str(exc)) from exc
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise TransportError("network", f"{type(exc).__name__}: {exc}") from exc
        if response.isclosed() and not response.will_close:
            _connections()[key] = conn
        else:
            conn.close()
        return Response(response.status, data[:SNIPPET_CHARS].decode("utf-8", "replace"))
    raise TransportError("connection_closed", "the endpoint closed the connection")
