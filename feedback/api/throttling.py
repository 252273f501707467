"""Rate limit per API key: a fixed window counter in the shared cache (Redis in production).

One round trip per request on Redis (``INCR`` and ``EXPIRE NX`` pipelined). The window is the
rate's period, so a client may burst up to twice the rate across a window boundary; in
exchange the counter costs less than the request's own INSERT. The rate comes from
``REDRESS_INGEST_RATE`` in DRF's syntax (``600/minute``). Counters are keyed by the key's hash,
which the intake views know before the key's context is loaded: there the cached context and
the counter come back from Redis in one command (``ingest_key_checked``), shared with the DRF
views, which count the same counter.

Leases (intake views on Redis, keys with a high rate only). That round trip cost a fifth of a
single intake request's throughput (docs/performance.md). A key whose
rate allows at least 1,000 requests per window may take up to ``REDRESS_INGEST_LEASE``
requests at once from its counter (the lease: a share of its rate of at most 1/1,000), which
this process then lets through without asking Redis, for at most ``LEASE_SECONDS``. Threads
that refill a key's lease at once add their shares to the one lease of the process
(``_lease_add``). The part of a lease left unused (it expired, or its window ended) stays
counted, so such a key may be refused early by that much: a lease per process and window, 0.1%
of its rate or less. A revoked key (or a changed taxonomy) may serve up to the rest of a lease
per process for at most ``LEASE_SECONDS`` after the change. Keys at ordinary rates (600/minute)
never hold a lease: every request asks Redis, as before.

Redis down or frozen (feedback/redis_cache.py): the context comes from the database and the
counter from this process (``_local_counts``, the same fixed windows), so a key may then get its
rate once per process. The first request to count locally in an outage says so in the log.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.cache import cache
from redis.exceptions import RedisError
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle

from ..redis_cache import Breaker
from ..selectors import KeyContext, api_key_context_load
from ..services.keys import cache_key_for_hash, hash_key
from .auth import key_context


@lru_cache(maxsize=8)
def parse_rate(rate: str) -> tuple[int, int]:
    return SimpleRateThrottle.parse_rate(None, rate)  # type: ignore[arg-type]


logger = logging.getLogger("redress.throttle")


def _redis() -> tuple[Any, Any, Breaker | None] | None:
    """(redis-py client, Django's client wrapper, breaker) of the default cache when it is Redis.

    The client is kept on Django's wrapper: building one per request showed in the profile,
    and a settings change (tests) makes a new wrapper, so a stale client is never reused.
    The breaker (``feedback.redis_cache``) says whether Redis may be asked now."""
    backend = getattr(cache, "_cache", None)
    if backend is None or not hasattr(backend, "get_client"):  # django's RedisCache only
        return None
    client = getattr(backend, "redress_client", None)
    if client is None:
        client = backend.get_client(write=True)
        backend.redress_client = client
        backend.redress_breaker = getattr(cache, "breaker", None)
    return client, backend, backend.redress_breaker


class LocalCounts:
    """Fixed-window counters of this process: the rate limit while Redis is unavailable."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def incr(self, counter: str) -> int:
        with self._lock:
            if len(self._counts) >= 10_000:  # counters of past windows
                self._counts.clear()
            count = self._counts.get(counter, 0) + 1
            self._counts[counter] = count
        return count

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()

    def announce(self, breaker: Breaker) -> None:
        """Log, once per outage of the breaker's Redis, that counting is now per process."""
        if not breaker.first_to_say("throttle"):
            return
        logger.warning(
            "Rate limits are counted in this process only while Redis is unavailable: each "
            "process lets a key through at most %s",
            settings.REDRESS_INGEST_RATE,
        )


_local_counts = LocalCounts()


def _count_locally(counter: str, breaker: Breaker) -> int:
    _local_counts.announce(breaker)
    return _local_counts.incr(cache.make_key(counter))


# GET the cached context, add the requests taken (1, or a lease) to the counter, set its expiry
# once: one command to pack and one reply to parse. The same as a pipeline of the three, at a
# fraction of redis-py's client-side cost (it was a quarter of a single request's CPU in the
# profile).
LOOKUP_AND_COUNT = """
local context = redis.call('GET', KEYS[1])
local count = redis.call('INCRBY', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[1], 'NX')
return {context, count}
"""

# A lease lets a process through at most this long on a context read from Redis.
LEASE_SECONDS = 1.0
# A lease is at most this share of the rate (1/LEASE_SHARE): rates under LEASE_SHARE requests
# per window get no lease at all.
LEASE_SHARE = 1000


@dataclass(slots=True)
class Lease:
    """Requests this process may still let through for one key in one window."""

    context: KeyContext
    window: int
    left: int
    until: float  # time.monotonic() deadline


_leases: dict[str, Lease] = {}  # by the key's full cache key (prefix included)
_leases_lock = threading.Lock()


def lease_size(num_requests: int) -> int:
    """Requests taken from the counter at once for a key allowed ``num_requests`` per window."""
    most = getattr(settings, "REDRESS_INGEST_LEASE", 50)
    return max(1, min(most, num_requests // LEASE_SHARE))


def _take_leased(lease_key: str, window: int) -> KeyContext | None:
    """The context of a live lease of this key in this window, one request taken; else None."""
    lease = _leases.get(lease_key)
    if lease is None or lease.window != window:
        return None
    with _leases_lock:
        if lease.left <= 0 or time.monotonic() >= lease.until:
            return None
        lease.left -= 1
    return lease.context


def _lease_add(lease_key: str, context: KeyContext, window: int, more: int) -> None:
    """Add ``more`` requests to this process's lease of a key.

    Threads that found the lease empty at once each take a lease from Redis; each adds its
    share to the one lease here, where replacing it lost the others' shares (16 threads got
    1,691 of a 3,000/minute rate). The deadline and the context are the newest."""
    until = time.monotonic() + LEASE_SECONDS
    with _leases_lock:
        lease = _leases.get(lease_key)
        if lease is not None and lease.window == window and lease.until > time.monotonic():
            lease.left = max(lease.left, 0) + more
            lease.until = until
            lease.context = context
            return
        if len(_leases) >= 10_000:  # keys of past windows, of other prefixes (tests)
            _leases.clear()
        _leases[lease_key] = Lease(context, window, more, until)


def _lookup_and_count(client: Any) -> Any:
    script = getattr(client, "redress_lookup_and_count", None)
    if script is None:  # redis-py loads it on first use (EVALSHA, then SCRIPT LOAD if needed)
        script = client.register_script(LOOKUP_AND_COUNT)
        client.redress_lookup_and_count = script
    return script


def _counter_key(key_hash: str, duration: int, now: float) -> tuple[str, int]:
    window = int(now // duration)
    return f"throttle:{key_hash}:{window}", window


def _count(key: str, duration: int) -> int:
    redis = _redis()
    if redis is not None:
        client, _, breaker = redis
        if breaker is not None and not breaker.allows():
            return _count_locally(key, breaker)
        full_key = cache.make_key(key)
        pipe = client.pipeline(transaction=False)
        pipe.incr(full_key)
        pipe.expire(full_key, duration + 1, nx=True)
        try:
            count = int(pipe.execute()[0])
        except RedisError as exc:
            if breaker is None:
                raise
            breaker.failure(exc)
            return _count_locally(key, breaker)
        if breaker is not None:
            breaker.success()
        return count
    if cache.add(key, 1, duration + 1):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, duration + 1)
        return 1


def _retry_after(count: int, window: int, duration: int, now: float) -> float | None:
    num_requests = parse_rate(settings.REDRESS_INGEST_RATE)[0]
    if count > num_requests:
        return max(1.0, (window + 1) * duration - now)
    return None


def ingest_key_checked(raw_key: str) -> tuple[KeyContext | None, float | None]:
    """The context of an ``ingest`` key and, when it is over its rate, the seconds to wait.

    (None, None) for a key that is unknown, revoked or without the ``ingest`` scope: such a
    request is left to the DRF view, which refuses it (401/403) without counting it, as here.
    On Redis the cached context and the counter cost one round trip together.
    """
    key_hash = hash_key(raw_key)
    num_requests, duration = parse_rate(settings.REDRESS_INGEST_RATE)
    now = time.time()
    counter, window = _counter_key(key_hash, duration, now)
    redis = _redis()
    if redis is None:
        context = api_key_context_load_cached(key_hash)
        if context is None or not context.has_scope("ingest"):
            return None, None
        return context, _retry_after(_count(counter, duration), window, duration, now)

    client, backend, breaker = redis
    context_key = cache.make_key(cache_key_for_hash(key_hash))
    leased = _take_leased(context_key, window)
    if leased is not None:
        return leased, None
    if breaker is not None and not breaker.allows():
        return _checked_locally(key_hash, counter, window, duration, now, breaker)
    full_counter = cache.make_key(counter)
    taken = lease_size(num_requests)
    try:
        cached, count = _lookup_and_count(client)(
            keys=[context_key, full_counter], args=[duration + 1, taken]
        )
    except RedisError as exc:
        if breaker is None:
            raise
        breaker.failure(exc)
        return _checked_locally(key_hash, counter, window, duration, now, breaker)
    if breaker is not None:
        breaker.success()
    if cached is not None:
        context = backend._serializer.loads(cached) or None  # False: unknown or revoked
    else:
        context = api_key_context_load(key_hash)
    if context is None or not context.has_scope("ingest"):
        # not counted: DRF counts only requests it lets through (best effort: a failure here
        # only refuses that key early by ``taken``)
        with contextlib.suppress(RedisError):
            client.decrby(full_counter, taken)
        return None, None
    count = int(count)
    # The requests of this lease within the rate: the first is this one, the rest are leased.
    granted = min(taken, num_requests - (count - taken))
    if granted <= 0:
        return context, _retry_after(count, window, duration, now)
    if granted > 1:
        _lease_add(context_key, context, window, granted - 1)
    return context, None


def _checked_locally(
    key_hash: str, counter: str, window: int, duration: int, now: float, breaker: Breaker
) -> tuple[KeyContext | None, float | None]:
    """``ingest_key_checked`` while Redis is unavailable: the database and this process."""
    context = api_key_context_load(key_hash)
    if context is None or not context.has_scope("ingest"):
        return None, None
    return context, _retry_after(_count_locally(counter, breaker), window, duration, now)


def api_key_context_load_cached(key_hash: str) -> KeyContext | None:
    cached = cache.get(cache_key_for_hash(key_hash))
    if cached is not None:
        return cached or None
    return api_key_context_load(key_hash)


class ApiKeyRateThrottle(BaseThrottle):
    def __init__(self) -> None:
        self._wait: float | None = None

    def allow_request(self, request, view) -> bool:
        from .token_grant import TokenGrant, token_wait

        if isinstance(request.auth, TokenGrant):  # an end user's browser: its own rates
            self._wait = token_wait(request.auth)
            return self._wait is None
        context = key_context(request)
        if context is None:
            return True  # people are not rate limited here
        duration = parse_rate(settings.REDRESS_INGEST_RATE)[1]
        now = time.time()
        counter, window = _counter_key(request.user.key_hash, duration, now)
        self._wait = _retry_after(_count(counter, duration), window, duration, now)
        return self._wait is None

    def wait(self) -> float | None:
        return self._wait


# A browser token's requests (and an end user's) are few, and a Redis round trip per request
# cost a fifth of the single request's throughput (bench). Each process lets the first
# 1/ALLOWANCE_SHARE of a counter's rate through per window on its own count; from there on it
# adds what it let through to Redis, and every further request is counted there. A counter may
# thus go over its rate by that share per process serving it in one window (30/minute: 3 per
# process), which keeps the limit's purpose (a flood is refused) at no cost to one user's clicks.
ALLOWANCE_SHARE = 10


class LocalAllowance:
    """Per counter and window in this process: requests seen, and how many were added to
    Redis."""

    def __init__(self) -> None:
        self._entries: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, free: int) -> int:
        """Count one request; the number to add to Redis now (0: within the allowance)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                if len(self._entries) >= 100_000:  # counters of past windows
                    self._entries.clear()
                entry = self._entries[key] = [0, 0]
            entry[0] += 1
            if entry[0] <= free:
                return 0
            delta, entry[1] = entry[0] - entry[1], entry[0]
            return delta

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_allowance = LocalAllowance()


def counted_wait(counters: list[tuple[str, str]]) -> float | None:
    """Count one request against each (name, rate) at once: the seconds to wait when any is
    over its rate, else None. On Redis: one command for all of them (``COUNT_ALL``), past each
    counter's allowance in this process (``ALLOWANCE_SHARE``); the process's own counts while
    Redis is unavailable, the cache's add/incr without Redis (tests, the embedded default)."""
    now = time.time()
    keyed = []
    for name, rate in counters:
        num_requests, duration = parse_rate(rate)
        window = int(now // duration)
        keyed.append((f"throttle:{name}:{window}", num_requests, duration, window))
    counts = _count_all(keyed)
    waits = [
        max(1.0, (window + 1) * duration - now)
        for (_, num_requests, duration, window), count in zip(keyed, counts, strict=True)
        if count > num_requests
    ]
    return max(waits) if waits else None


# INCRBY each counter and set its expiry once: one command for all of a request's counters. A
# pipeline of the same commands cost the web process several times more in redis-py's packing
# and parsing (as LOOKUP_AND_COUNT above found for keys). ARGV: the amounts, then the expiries.
COUNT_ALL = """
local counts = {}
for i, key in ipairs(KEYS) do
    counts[i] = redis.call('INCRBY', key, ARGV[i])
    redis.call('EXPIRE', key, ARGV[#KEYS + i], 'NX')
end
return counts
"""


def _count_all_script(client: Any) -> Any:
    script = getattr(client, "redress_count_all", None)
    if script is None:
        script = client.register_script(COUNT_ALL)
        client.redress_count_all = script
    return script


def _count_all(keyed: list[tuple[str, int, int, int]]) -> list[int]:
    """The count of each counter after this request (0 for one within this process's
    allowance: under its rate by construction)."""
    redis = _redis()
    if redis is None:
        return [_count(key, duration) for key, _, duration, _ in keyed]
    client, _, breaker = redis
    if breaker is not None and not breaker.allows():
        return [_count_locally(key, breaker) for key, _, _, _ in keyed]
    adds = [
        _allowance.take(cache.make_key(key), num_requests // ALLOWANCE_SHARE)
        for key, num_requests, _, _ in keyed
    ]
    sent = [index for index, add in enumerate(adds) if add]
    counts = [0] * len(keyed)
    if not sent:
        return counts
    try:
        replies = _count_all_script(client)(
            keys=[cache.make_key(keyed[i][0]) for i in sent],
            args=[adds[i] for i in sent] + [keyed[i][2] + 1 for i in sent],
        )
    except RedisError as exc:
        if breaker is None:
            raise
        breaker.failure(exc)
        return [_count_locally(key, breaker) for key, _, _, _ in keyed]
    if breaker is not None:
        breaker.success()
    for index, count in zip(sent, replies, strict=True):
        counts[index] = int(count)
    return counts
