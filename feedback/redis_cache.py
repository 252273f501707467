"""The Redis cache for a request path that must keep working while Redis does not.

Django's ``RedisCache`` with two changes, for API-key lookups and rate limits (and any other
user of the default cache):

- An operation that fails (Redis refused the connection, timed out, answered an error) reads as
  a miss and drops the write, instead of raising into the request. Callers fall back on the
  database (key lookups, ``feedback.selectors``) or on counting in the process (rate limits,
  ``feedback.api.throttling``). ``incr``/``decr`` still raise: a count has no harmless default.
- A circuit breaker per process and Redis server: after a failure nobody in the process asks
  that Redis again for ``REDRESS_REDIS_RETRY_SECONDS``; then one request tries it, and its
  success closes the breaker. A frozen Redis thus costs one request per interval the socket
  timeout (``REDRESS_REDIS_TIMEOUT``, set in config/settings.py with no retries), not every
  request.

The breaker logs one WARNING when an outage starts in this process and one when Redis answers
again, never one per request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from django.conf import settings
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import RedisError

logger = logging.getLogger("redress.redis")

T = TypeVar("T")


class Breaker:
    """Whether this process may ask one Redis server now.

    Closed (the usual state): every call goes to Redis. Open (after a failure): calls are
    skipped until ``retry_at``; the first caller past it is let through alone (the others keep
    skipping for another interval) and closes the breaker when Redis answers."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.down_since: float | None = None  # time.monotonic() of the first failure
        self.retry_at = 0.0
        self.outages = 0  # how many times this breaker has opened: names the current outage
        self.skipped = 0  # calls not sent during the current outage
        self._announced: set[str] = set()  # what callers said about the current outage
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def allows(self) -> bool:
        """May the caller send a command now? Precondition for ``failure``/``success``."""
        if self.down_since is None:
            return True
        now = time.monotonic()
        with self._lock:
            if self.down_since is None:
                return True
            if now < self.retry_at:
                self.skipped += 1
                return False
            self.retry_at = now + retry_seconds()  # this caller probes; the others wait
            return True

    def failure(self, exc: BaseException) -> None:
        with self._lock:
            now = time.monotonic()
            self.retry_at = now + retry_seconds()
            if self.down_since is not None:
                return
            self.down_since = now
            self.outages += 1
            self.skipped = 0
            self._announced.clear()
        logger.warning(
            "Redis at %s is unavailable (%s: %s): API-key lookups fall back to the database "
            "and rate limits are counted per process until it answers; next try in %g s",
            self.name,
            type(exc).__name__,
            exc,
            retry_seconds(),
        )

    def first_to_say(self, topic: str) -> bool:
        """True once per outage and topic: lets a caller log its own fallback once."""
        if topic in self._announced:
            return False
        with self._lock:
            if topic in self._announced:
                return False
            self._announced.add(topic)
            return True

    def success(self) -> None:
        if self.down_since is None:
            return
        with self._lock:
            if self.down_since is None:
                return
            lasted = time.monotonic() - self.down_since
            skipped, self.skipped = self.skipped, 0
            self.down_since = None
        logger.warning(
            "Redis at %s answers again after %.1f s (%d calls skipped): API-key lookups and "
            "rate limits use it again",
            self.name,
            lasted,
            skipped,
        )


def retry_seconds() -> float:
    return float(getattr(settings, "REDRESS_REDIS_RETRY_SECONDS", 3.0))


_breakers: dict[str, Breaker] = {}
_breakers_lock = threading.Lock()


def breaker_for(location: str) -> Breaker:
    """The process's one breaker for a Redis server (Django makes a cache object per thread)."""
    breaker = _breakers.get(location)
    if breaker is None:
        with _breakers_lock:
            breaker = _breakers.setdefault(location, Breaker(_without_password(location)))
    return breaker


def _without_password(location: str) -> str:
    scheme, sep, rest = location.partition("://")
    if "@" in rest:
        rest = rest.rsplit("@", 1)[1]
    return f"{scheme}{sep}{rest}"


def guarded(fallback: Callable[..., T]) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Run a cache operation through the breaker; ``fallback(*args, **kwargs)`` answers when
    Redis is skipped or fails."""

    def decorate(method: Callable[..., T]) -> Callable[..., T]:
        @wraps(method)
        def run(self: ResilientRedisCache, *args: Any, **kwargs: Any) -> T:
            breaker = self.breaker
            if not breaker.allows():
                return fallback(*args, **kwargs)
            try:
                result = method(self, *args, **kwargs)
            except RedisError as exc:
                breaker.failure(exc)
                return fallback(*args, **kwargs)
            breaker.success()
            return result

        return run

    return decorate


def _default(key: str, default: Any = None, version: int | None = None) -> Any:
    return default


def _false(*args: Any, **kwargs: Any) -> bool:
    return False


def _none(*args: Any, **kwargs: Any) -> None:
    return None


def _nothing(*args: Any, **kwargs: Any) -> dict:
    return {}


def _all_failed(data: dict, *args: Any, **kwargs: Any) -> list:
    return list(data)  # set_many's "keys that failed to insert"


class ResilientRedisCache(RedisCache):
    """Django's Redis cache that answers a miss instead of raising while Redis is down."""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self.breaker = breaker_for(self._servers[0])

    get = guarded(_default)(RedisCache.get)
    get_many = guarded(_nothing)(RedisCache.get_many)
    has_key = guarded(_false)(RedisCache.has_key)
    add = guarded(_false)(RedisCache.add)
    set = guarded(_none)(RedisCache.set)
    set_many = guarded(_all_failed)(RedisCache.set_many)
    touch = guarded(_false)(RedisCache.touch)
    delete = guarded(_false)(RedisCache.delete)
    delete_many = guarded(_none)(RedisCache.delete_many)
    clear = guarded(_false)(RedisCache.clear)


def breaker_of(cache: Any) -> Breaker | None:
    """The breaker of a cache (Django's ``cache`` proxy or a backend), None if it has none."""
    return getattr(cache, "breaker", None)


def degraded(cache: Any) -> bool:
    """Is this cache's Redis known to be down in this process right now?"""
    breaker = breaker_of(cache)
    return breaker is not None and breaker.down
