"""Personal API tokens (``Authorization: Token …``), stored hashed like project keys."""

from __future__ import annotations

import secrets

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from ..errors import Conflict
from ..models import PersonalToken
from .keys import hash_key

# What is kept in clear to recognise a token in the admin (of 40 hex characters).
TOKEN_PREFIX_CHARS = 8


@transaction.atomic
def personal_token_create(*, user: AbstractBaseUser, replace: bool = False) -> str:
    """Make the person's token and return it: the only time it exists in clear.

    A person has one token. With ``replace`` an existing one stops working at once; without,
    an existing one is a 409 (it was shown when it was made and cannot be shown again).
    """
    existing = PersonalToken.objects.select_for_update().filter(user=user).first()
    if existing is not None:
        if not replace:
            raise Conflict.one(
                "user",
                "token_exists",
                f"{user.get_username()} already has a token ({existing.prefix}…, made "
                f"{existing.created_at:%Y-%m-%d %H:%M} UTC); it was shown once. Replace it "
                "with -r.",
            )
        existing.delete()
    raw = secrets.token_hex(20)  # 160 bits, the length DRF's tokens had
    PersonalToken.objects.create(user=user, prefix=raw[:TOKEN_PREFIX_CHARS], key_hash=hash_key(raw))
    return raw
