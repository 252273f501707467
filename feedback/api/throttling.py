"""Rate limit per API key: a fixed window counter in the shared cache (Redis in production).

One round trip per request on Redis (``INCR`` and ``EXPIRE NX`` pipelined). The window is the
rate's period, so a client may burst up to twice the rate across a window boundary; in
exchange the counter costs less than the request's own INSERT. The rate comes from
``REDRESS_INGEST_RATE`` in DRF's syntax (``600/minute``).
"""

from __future__ import annotations

import time
from functools import lru_cache

from django.conf import settings
from django.core.cache import cache
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle

from .auth import key_context


@lru_cache(maxsize=8)
def parse_rate(rate: str) -> tuple[int, int]:
    return SimpleRateThrottle.parse_rate(None, rate)  # type: ignore[arg-type]


def _count(key: str, duration: int) -> int:
    backend = getattr(cache, "_cache", None)
    if backend is not None and hasattr(backend, "get_client"):  # django's RedisCache
        full_key = cache.make_and_validate_key(key)
        client = backend.get_client(full_key, write=True)
        pipe = client.pipeline(transaction=False)
        pipe.incr(full_key)
        pipe.expire(full_key, duration + 1, nx=True)
        return int(pipe.execute()[0])
    if cache.add(key, 1, duration + 1):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, duration + 1)
        return 1


class ApiKeyRateThrottle(BaseThrottle):
    def __init__(self) -> None:
        self._wait: float | None = None

    def allow_request(self, request, view) -> bool:
        context = key_context(request)
        if context is None:
            return True  # people are not rate limited here
        num_requests, duration = parse_rate(settings.REDRESS_INGEST_RATE)
        now = time.time()
        window = int(now // duration)
        count = _count(f"throttle:{context.key_id}:{window}", duration)
        if count > num_requests:
            self._wait = max(1.0, (window + 1) * duration - now)
            return False
        return True

    def wait(self) -> float | None:
        return self._wait
