"""Browser feedback tokens: the project's token secret, allowed origins, and minting.

The token format and its check are ``feedback/feedback_tokens.py``; the README shows the
format and how an app's server mints tokens offline.

Rotation: ``token_secret_rotate`` makes a new secret and, by default, refuses every token
signed with the old one at once (``invalid_token``). With ``grace_seconds`` (at most a day) the
old secret keeps being accepted that long, for the tokens already in users' pages; a second
rotation within the grace ends the first one's.
"""

from __future__ import annotations

import secrets
import time
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from django.db import transaction
from django.utils import timezone

from ..errors import FieldError, InvalidInput, NotFound
from ..feedback_tokens import (
    KINDS,
    SECRET_PREFIX,
    TTL_MAX_SECONDS,
    TTL_MIN_SECONDS,
    token_mint,
)
from ..models import Prediction, Project
from ..selectors import KeyContext
from ..validation import END_USER_MAX_CHARS, EXTERNAL_ID_MAX_CHARS
from .keys import project_cache_invalidate

GRACE_MAX_SECONDS = 86400
MINT_FIELDS = frozenset({"prediction", "end_user", "kinds", "ttl_seconds"})
DEFAULT_KINDS = ("rating", "report", "dispute")
DEFAULT_TTL_SECONDS = 86400
MAX_ORIGINS = 50


def new_token_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


@transaction.atomic
def token_secret_rotate(*, project: Project, grace_seconds: int = 0) -> str:
    """Give the project a new token secret and return it: the only time it is shown.

    Tokens signed with the previous secret are refused from now on, or after
    ``grace_seconds`` (0 to 86,400) when given."""
    if not 0 <= grace_seconds <= GRACE_MAX_SECONDS:
        raise InvalidInput.one(
            "grace_seconds", "out_of_range", f"From 0 to {GRACE_MAX_SECONDS} seconds."
        )
    locked = Project.objects.select_for_update().get(pk=project.pk)
    now = timezone.now()
    secret = new_token_secret()
    if grace_seconds and locked.token_secret:
        locked.token_secret_previous = locked.token_secret
        locked.token_secret_previous_until = now + timedelta(seconds=grace_seconds)
    else:
        locked.token_secret_previous = ""
        locked.token_secret_previous_until = None
    locked.token_secret = secret
    locked.token_secret_rotated_at = now
    locked.save(
        update_fields=[
            "token_secret",
            "token_secret_previous",
            "token_secret_previous_until",
            "token_secret_rotated_at",
        ]
    )
    project_cache_invalidate(project_id=project.pk)
    for name in ("token_secret", "token_secret_previous", "token_secret_previous_until",
                 "token_secret_rotated_at"):
        setattr(project, name, getattr(locked, name))
    return secret


def project_secret_for_tokens(*, project_id: int) -> str:
    """The project's token secret, made on first use (an app minting through the API never
    needs to see it; rotating shows a new one)."""
    secret = Project.objects.filter(pk=project_id).values_list("token_secret", flat=True).first()
    if secret:
        return secret
    with transaction.atomic():
        locked = Project.objects.select_for_update().get(pk=project_id)
        if not locked.token_secret:
            locked.token_secret = new_token_secret()
            locked.token_secret_rotated_at = timezone.now()
            locked.save(update_fields=["token_secret", "token_secret_rotated_at"])
            project_cache_invalidate(project_id=project_id)
        return locked.token_secret


def clean_origins(value: Any, *, field_name: str = "allowed_origins") -> list[str]:
    """``scheme://host[:port]`` origins, as a browser sends them in ``Origin``: lower-case,
    no path, no trailing slash; https, or http for localhost development."""
    if type(value) is not list:
        raise InvalidInput.one(field_name, "invalid_type", "A list of origins.")
    if len(value) > MAX_ORIGINS:
        raise InvalidInput.one(field_name, "too_many", f"At most {MAX_ORIGINS} origins.")
    errors, cleaned = [], []
    for index, origin in enumerate(value):
        path = f"{field_name}[{index}]"
        if type(origin) is not str:
            errors.append(FieldError(path, "invalid_type", "An origin string."))
            continue
        parts = urlsplit(origin.strip())
        try:
            port = parts.port
        except ValueError:
            port = -1
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path not in ("",)
            or parts.query
            or parts.fragment
            or parts.username
            or port == -1
            or "*" in origin
        ):
            errors.append(
                FieldError(
                    path,
                    "invalid_origin",
                    f"{origin!r} is not an origin: scheme://host[:port], e.g. "
                    "https://app.example.com (no path, no trailing slash, no wildcard).",
                )
            )
            continue
        normal = f"{parts.scheme}://{parts.hostname}" + (f":{port}" if port else "")
        if normal not in cleaned:
            cleaned.append(normal)
    if errors:
        raise InvalidInput(errors)
    return cleaned


@transaction.atomic
def project_origins_set(*, project: Project, origins: Any) -> Project:
    """Set the origins whose pages may call the token endpoints (CORS)."""
    project.allowed_origins = clean_origins(origins)
    project.save(update_fields=["allowed_origins"])
    project_cache_invalidate(project_id=project.pk)
    return project


def _mint_input(data: Any) -> tuple[str, str, tuple[str, ...], int]:
    if type(data) is not dict:
        raise InvalidInput.one(None, "invalid_type", "Expected a JSON object.")
    valid = ", ".join(sorted(MINT_FIELDS))
    errors = [
        FieldError(name, "unknown_field", f"Unknown field; valid: {valid}.")
        for name in sorted(set(data) - MINT_FIELDS)
    ]
    prediction = data.get("prediction")
    if type(prediction) is not str or not prediction.strip():
        errors.append(FieldError("prediction", "required", "The prediction's external_id."))
    elif len(prediction) > EXTERNAL_ID_MAX_CHARS or "\x00" in prediction:
        errors.append(
            FieldError("prediction", "invalid", f"At most {EXTERNAL_ID_MAX_CHARS} characters.")
        )
    end_user = data.get("end_user")
    if type(end_user) is not str or not end_user.strip():
        errors.append(
            FieldError("end_user", "required", "The app's id of the end user (pseudonymised).")
        )
    elif len(end_user) > END_USER_MAX_CHARS or "\x00" in end_user:
        errors.append(
            FieldError("end_user", "invalid", f"At most {END_USER_MAX_CHARS} characters.")
        )
    kinds = data.get("kinds", list(DEFAULT_KINDS))
    if (
        type(kinds) is not list
        or not kinds
        or any(type(k) is not str or k not in KINDS for k in kinds)
        or len(set(kinds)) != len(kinds)
    ):
        errors.append(
            FieldError("kinds", "invalid_choice", "A non-empty list of rating, report, dispute.")
        )
        kinds = []
    ttl = data.get("ttl_seconds", DEFAULT_TTL_SECONDS)
    if type(ttl) is not int or not TTL_MIN_SECONDS <= ttl <= TTL_MAX_SECONDS:
        errors.append(
            FieldError(
                "ttl_seconds",
                "out_of_range",
                f"An integer from {TTL_MIN_SECONDS} to {TTL_MAX_SECONDS} (7 days).",
            )
        )
    if errors:
        raise InvalidInput(errors)
    ordered = tuple(kind for kind in KINDS if kind in kinds)
    return prediction, end_user, ordered, ttl


def feedback_token_create(*, context: KeyContext, data: Any) -> tuple[str, int]:
    """Mint a token for one prediction of the key's project and one end user: (token,
    expires_at in unix seconds). 400 for bad input, 404 for a prediction not logged here."""
    prediction, end_user, kinds, ttl = _mint_input(data)
    if not Prediction.objects.filter(
        project_id=context.project_id, external_id=prediction
    ).exists():
        raise NotFound(
            FieldError(
                "prediction",
                "unknown_prediction",
                f"No prediction {prediction!r} is logged in this project; log it first.",
            )
        )
    secret = project_secret_for_tokens(project_id=context.project_id)
    return token_mint(
        secret=secret,
        project=context.project_slug,
        prediction=prediction,
        end_user=end_user,
        kinds=kinds,
        issued_at=int(time.time()),
        ttl_seconds=ttl,
    )
