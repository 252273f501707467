"""API keys: creation (the raw key is returned once), revocation and cache invalidation."""

from __future__ import annotations

import hashlib
import secrets

from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from ..errors import InvalidInput
from ..models import ApiKey, Project

KEY_PREFIX = "rdr_"
CACHE_PREFIX = "apikey:"


def hash_key(raw_key: str) -> str:
    # Keys carry 256 bits of randomness, so a plain sha256 is enough (no salt or slow KDF).
    return hashlib.sha256(raw_key.encode()).hexdigest()


def cache_key_for_hash(key_hash: str) -> str:
    return CACHE_PREFIX + key_hash


def apikey_create(
    *,
    project: Project,
    scopes: list[str],
    name: str = "",
    actor: AbstractBaseUser | None = None,
) -> tuple[ApiKey, str]:
    """Create a key and return it with the raw secret, which is never stored nor shown again."""
    valid = set(ApiKey.Scope.values)
    scopes = sorted(set(scopes))
    unknown = [scope for scope in scopes if scope not in valid]
    if not scopes or unknown:
        raise InvalidInput.one(
            "scopes",
            "invalid_choice",
            f"Scopes must be a non-empty subset of {', '.join(sorted(valid))}; "
            f"got {unknown or scopes}.",
        )
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        project=project,
        name=name,
        prefix=raw[:12],
        key_hash=hash_key(raw),
        scopes=scopes,
        created_by=actor if actor is not None and actor.is_authenticated else None,
    )
    return key, raw


def apikey_revoke(*, key: ApiKey) -> ApiKey:
    """Revoke a key at once: the cached lookup is dropped after the row is committed."""
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    transaction.on_commit(lambda: cached_lookups_drop([cache_key_for_hash(key.key_hash)]))
    return key


def cached_lookups_drop(keys: list[str]) -> None:
    """Drop cached key lookups: from Redis, and from this process's own copies (kept while
    Redis is unavailable; other processes drop theirs within ``KEY_FALLBACK_SECONDS``)."""
    from ..selectors import fallback_contexts, token_memo  # selectors import this module

    # While Redis is down this drops nothing there: the entries were cached before the change
    # and expire within KEY_CACHE_SECONDS of it.
    cache.delete_many(keys)
    for key in keys:
        fallback_contexts.drop(cache.make_key(key))
    token_memo.clear()  # this process's copies of token contexts (the others' expire in 1 s)


def project_cache_invalidate(*, project_id: int) -> None:
    """Drop the cached lookups of every key of a project (its settings or taxonomy changed)."""
    from ..selectors import TOKEN_ORIGINS_CACHE_KEY, TOKEN_PROJECT_CACHE_PREFIX

    hashes = ApiKey.objects.filter(project_id=project_id).values_list("key_hash", flat=True)
    keys = [cache_key_for_hash(key_hash) for key_hash in hashes]
    # The browser-token context of the project (secrets, origins, taxonomy), and the origins
    # of all projects (preflights).
    slugs = Project.objects.filter(pk=project_id).values_list("slug", flat=True)
    keys += [TOKEN_PROJECT_CACHE_PREFIX + slug for slug in slugs] + [TOKEN_ORIGINS_CACHE_KEY]
    transaction.on_commit(lambda: cached_lookups_drop(keys))
