"""Deterministic per-row randomness, computed inside the database.

``u(seed, id)`` is the first 32 bits of md5("<seed>:<id>") divided by 2**32: a uniform number in
[0, 1) that depends only on the seed and the row, so the same seed over the same population draws
the same sample, and draws run as SQL without loading the population into Python. PostgreSQL
computes it with md5() and a bit-string cast; SQLite with a Python function registered on each
connection. Both give identical values.
"""

from __future__ import annotations

import hashlib

from django.db.backends.signals import connection_created
from django.db.models import FloatField, Func

SQLITE_FUNCTION = "redress_uniform"


def uniform(seed: int, row_id: int) -> float:
    digest = hashlib.md5(f"{seed}:{row_id}".encode(), usedforsecurity=False).hexdigest()
    return int(digest[:8], 16) / 4294967296.0


def _register_sqlite(sender, connection, **kwargs) -> None:
    if connection.vendor == "sqlite":
        connection.connection.create_function(SQLITE_FUNCTION, 2, uniform, deterministic=True)


connection_created.connect(_register_sqlite, dispatch_uid="redress-uniform")


class HashUniform(Func):
    """``HashUniform(seed, "id")``: the row's uniform number for a seed."""

    output_field = FloatField()
    arity = 2

    def as_sqlite(self, compiler, connection, **extra):
        return super().as_sql(compiler, connection, function=SQLITE_FUNCTION, **extra)

    def as_postgresql(self, compiler, connection, **extra):
        template = (
            "(('x' || substr(md5(CAST(%(expressions)s AS text)), 1, 8))::bit(32)::bigint"
            "::double precision / 4294967296.0)"
        )
        return super().as_sql(
            compiler, connection, template=template, arg_joiner=" AS text) || ':' || CAST(", **extra
        )
