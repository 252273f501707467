"""PostgreSQL query results as Arrow record batches, through ADBC's PostgreSQL driver.

The driver runs ``COPY (query) TO STDOUT (FORMAT binary)`` and decodes it into Arrow columns in
C++: no Python object per row, no text to parse, and no COPY text escaping to undo. Exports use
it to read their rows (see ``labeling.exports.engine``): for a million rows it costs the worker
about a quarter of the CPU that psycopg's per-record COPY iteration plus pyarrow's CSV parser did.

The driver opens its own connection (libpq, from the Django connection's parameters), so it only
sees committed rows; a build inside an outer transaction (tests) reads with psycopg instead.
Queries must carry no bind parameters (COPY takes none): ``inline`` renders them client-side with
psycopg's quoting.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
from django.db import OperationalError
from django.db.backends.base.base import BaseDatabaseWrapper
from psycopg import ClientCursor
from psycopg.conninfo import make_conninfo

# Bytes of COPY data the driver decodes into one record batch. Its default (16 MiB) held ~60 MB
# more resident memory per stream for no speed (measured on 1M export rows: 3.06 vs 2.69 s of
# CPU for 16 and 4 MiB).
BATCH_BYTES = 4 << 20
# Connection parameters psycopg takes that are not libpq's.
_NOT_LIBPQ = {"cursor_factory", "context", "prepare_threshold", "autocommit", "row_factory"}


def conninfo(wrapper: BaseDatabaseWrapper) -> str:
    """A libpq connection string equivalent to the Django connection's."""
    params = {
        key: value
        for key, value in wrapper.get_connection_params().items()
        if key not in _NOT_LIBPQ and value is not None and value != ""
    }
    return make_conninfo(**params)


def inline(wrapper: BaseDatabaseWrapper, sql: str, params: dict[str, Any]) -> str:
    """``sql`` with its ``%(name)s`` parameters rendered as literals (psycopg's quoting)."""
    wrapper.ensure_connection()
    return ClientCursor(wrapper.connection).mogrify(sql, params)


@contextmanager
def record_batches(
    dsn: str, sql: str, *, snapshot: str | None, setup: tuple[str, ...] = ()
) -> Iterator[pa.RecordBatchReader]:
    """Stream the rows of ``sql`` (no parameters; ``dsn`` from :func:`conninfo`) in a
    read-only repeatable-read transaction, on the exported ``snapshot`` when one is given,
    after the ``setup`` statements (``SET LOCAL …``).

    The driver manager's low-level API, not its DB-API module: that one imports pandas and
    pyarrow.dataset, 56 MB of resident memory in every worker for nothing used here.
    Connection failures surface as Django's ``OperationalError`` (transient: the caller may
    retry); other driver errors as they are."""
    import adbc_driver_manager as adbc
    import adbc_driver_postgresql

    try:
        database = adbc_driver_postgresql.connect(dsn)
        connection = adbc.AdbcConnection(database)
    except adbc.OperationalError as exc:
        raise OperationalError(str(exc)) from exc
    statement = adbc.AdbcStatement(connection)
    try:

        def run(text: str) -> None:
            statement.set_sql_query(text)
            statement.execute_update()

        run("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        if snapshot:
            # Must come first in the transaction; the id is PostgreSQL's, not user input.
            run(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
        for text in setup:
            run(text)
        statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(BATCH_BYTES)})
        statement.set_sql_query(sql)
        try:
            stream, _ = statement.execute_query()
        except adbc.OperationalError as exc:
            raise OperationalError(str(exc)) from exc
        reader = pa.RecordBatchReader.from_stream(stream)
        try:
            yield reader
        finally:
            reader.close()
        run("COMMIT")
    finally:
        statement.close()
        connection.close()
        database.close()
