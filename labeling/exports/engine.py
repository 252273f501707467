"""The export engine: streams an export's rows into a file, with its sha256, size and counts.

Three ways to read the rows, each where it is the only or the fastest one (same bytes from all
three, see ``tests/labeling/test_exports.py`` and ``test_exports_arrow.py``):

- portable: the ORM (``rows.export_rows_portable``) and the Python writers. The only path on
  SQLite, and the one ``export --portable`` forces.
- COPY text: ``COPY (rows.export_copy_sql) TO STDOUT`` on psycopg. CSV always (the records
  are already the file's bytes), and JSON lines / Parquet when the rows are those of an open
  transaction (a build inside a caller's atomic block: other connections cannot see them) or
  when ``REDRESS_EXPORT_ARROW_READER`` is off (a pooler ADBC's libpq cannot reach). Parquet then
  goes through pyarrow's CSV reader (``CopyReader``).
- Arrow: JSON lines and Parquet over committed rows, read as Arrow batches through ADBC
  (``pg_arrow``): no Python object per row and no text to parse; the bench's 1M-row figures
  rest on it.

On PostgreSQL a large export is read in ``stream_count()`` ranges of prediction ids, each on its
own connection on one exported snapshot: the first straight into the file, the others spooled to
temporary files and appended in order, so the bytes never depend on the number of streams.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from django.conf import settings
from django.db import connection, connections, transaction

from ..models import Export
from ..selectors.exports import gold_versions_touched
from ..splits import SPLITS
from .pg_arrow import conninfo, inline, record_batches
from .rows import (
    ARROW_TYPES,
    SPLIT_CODES,
    SPLIT_OF_CODE,
    ExportPlan,
    arrow_converter,
    export_copy_sql,
    export_count_sql,
    export_rows_portable,
)
from .writers import ParquetWriter, writer_for

# How often a running build reports progress, at most.
PROGRESS_SECONDS = 0.5


class ExportTooLarge(Exception):
    """The file grew past ``REDRESS_EXPORT_MAX_BYTES``."""


@dataclass
class BuildResult:
    path: str
    rows: int
    rows_per_split: dict[str, int]
    gold_versions: list[dict]
    gold_groups: int
    sha256: str
    size: int
    # What the file says about itself (``manifest.file_manifest``), embedded in Parquet.
    manifest: dict | None = None


# The Parquet key-value metadata key holding the file's manifest (JSON).
MANIFEST_KEY = b"redress.manifest"
# Makes a file's manifest once its rows are counted: (plan, rows, rows per split, gold versions).
ManifestMaker = Callable[[ExportPlan, int, dict, list], dict]


class _Embed:
    """The file's manifest, made when the writer closes (rows counted, before the footer)."""

    def __init__(self, make: ManifestMaker | None, plan: ExportPlan, gold_versions: list):
        self.make, self.plan, self.gold_versions = make, plan, gold_versions
        self.manifest: dict | None = None

    def __call__(self, rows: int, per_split: dict) -> dict[bytes, bytes] | None:
        if self.make is None:
            return None
        self.manifest = self.make(self.plan, rows, per_split, self.gold_versions)
        return {MANIFEST_KEY: json.dumps(self.manifest, sort_keys=True).encode()}


class Progress:
    """Reports progress at most every ``PROGRESS_SECONDS``.

    On PostgreSQL the rows stream through the main connection (a COPY occupies it), so progress
    goes through a second, autocommit connection, visible to pollers at once. Inside an outer
    transaction (tests, or a caller's atomic block) the export row may be locked by it, so
    progress is then only written at the end.
    """

    def __init__(
        self,
        *,
        export_id: int,
        total: int,
        side_connection: bool,
        same: bool,
        callback: Callable[[int, int], None] | None = None,
    ) -> None:
        self.export_id, self.total, self.callback = export_id, max(total, 1), callback
        self.side = connections.create_connection("default") if side_connection else None
        self.same = same
        self.last = time.monotonic()

    def __call__(self, rows: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < PROGRESS_SECONDS:
            return
        self.last = now
        if self.callback is not None:
            self.callback(rows, self.total)
        # Never 1.0 before the file is in storage: "done" says that.
        value = min(rows / self.total, 0.99)
        if self.side is not None:
            with self.side.cursor() as cursor:
                cursor.execute(
                    "UPDATE labeling_export SET progress = %s WHERE id = %s AND status = %s",
                    [value, self.export_id, Export.Status.RUNNING],
                )
        elif self.same:
            Export.objects.filter(pk=self.export_id, status=Export.Status.RUNNING).update(
                progress=value
            )

    def close(self) -> None:
        if self.side is not None:
            self.side.close()


class SizeGuard:
    """A file object wrapper refusing to grow past ``REDRESS_EXPORT_MAX_BYTES``, hashing what
    goes through it: the sha256 comes with the last byte written, while the database streams,
    instead of a second pass over the finished file (0.6 s for a million JSON lines)."""

    def __init__(self, out: IO[bytes], limit: int | None) -> None:
        self.out, self.limit, self.written = out, limit, 0
        self.digest = hashlib.sha256()

    def write(self, data) -> int:
        self.written += len(data)
        if self.limit is not None and self.written > self.limit:
            raise ExportTooLarge(
                f"The export grew past REDRESS_EXPORT_MAX_BYTES ({self.limit:,} bytes)."
            )
        self.digest.update(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()

    def tell(self) -> int:
        return self.written

    # pyarrow and io.TextIOWrapper probe these on the file objects they are given.
    closed = False

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self.out.flush()


def temp_prefix(export: Export) -> str:
    """Temporary files of a build are named after the export and its database: builds for
    another database on this machine (a bench, a test run) may use the same export id."""
    database = re.sub(r"[^A-Za-z0-9_.]", "_", str(connection.settings_dict.get("NAME") or ""))
    if connection.vendor == "sqlite" and connection.is_in_memory_db():
        # Every in-memory SQLite has the same name but lives in one process only: parallel
        # test runs on one machine must not remove each other's files.
        database += f"_{os.getpid()}"
    return f"redress-export-{database}-{export.pk}-"


def build_file(
    export: Export,
    *,
    plan: Callable[[], ExportPlan],
    portable: bool | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    manifest: ManifestMaker | None = None,
) -> BuildResult:
    """Write the export's rows into a new temporary file (the caller stores and removes it).

    ``plan()`` resolves what to read inside the build's snapshot (the gold keys must agree with
    the rows); ``portable`` forces the ORM path; ``on_progress(rows, total)`` as rows are written;
    ``manifest(plan, rows, rows_per_split, gold_versions)`` makes the file's manifest once the
    rows are counted (embedded in a Parquet file's key-value metadata, ``MANIFEST_KEY``).
    """
    use_copy = connection.vendor == "postgresql" and not portable
    outer_atomic = connection.in_atomic_block
    suffix = f".{export.format}"
    # A worker killed mid-build leaves its temporary files behind; the next attempt on this
    # machine removes them (files are named after the export).
    prefix = temp_prefix(export)
    for stale in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        stale.unlink(missing_ok=True)
    fd, path = tempfile.mkstemp(prefix=prefix, suffix=suffix)
    limit = getattr(settings, "REDRESS_EXPORT_MAX_BYTES", None)
    try:
        with open(fd, "wb") as raw, transaction.atomic():
            if connection.vendor == "postgresql" and not outer_atomic:
                # One snapshot for the counts, the gold keys and the rows.
                with connection.cursor() as cursor:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            plan = plan()
            out = SizeGuard(raw, limit)
            columns = plan.columns()
            touched = gold_versions_touched(items=plan.items(), project=export.project)
            embed = _Embed(manifest, plan, touched)
            if use_copy:
                rows, per_split = _write_postgres(
                    export, plan, out, columns, outer_atomic, on_progress, embed
                )
            else:
                rows, per_split = _write_portable(export, plan, out, columns, on_progress, embed)
        checksum, size = out.digest.hexdigest(), out.written
        if os.path.getsize(path) != size:  # something wrote around the guard: hash the file
            checksum, size = _sha256(path)
        if embed.manifest is None and manifest is not None:  # not Parquet: made here
            embed(rows, per_split)
        return BuildResult(
            path,
            rows,
            per_split,
            touched,
            len(plan.gold_groups),
            sha256=checksum,
            size=size,
            manifest=embed.manifest,
        )
    except BaseException:
        os.unlink(path)
        raise


def _write_portable(
    export: Export, plan: ExportPlan, out, columns, on_progress=None, embed=None
) -> tuple[int, dict]:
    total = plan.items().count()
    progress = Progress(
        export_id=export.pk, total=total, side_connection=False, same=True, callback=on_progress
    )
    writer = writer_for(export.format, out, columns)
    per_split: Counter[str] = Counter()
    for chunk in export_rows_portable(plan=plan):
        writer.write_rows(chunk)
        per_split.update(row["split"] for row in chunk)
        progress(writer.rows)
    counts = {name: per_split.get(name, 0) for name in SPLITS}
    if isinstance(writer, ParquetWriter) and embed is not None:
        writer.close(metadata=embed(writer.rows, counts))
    else:
        writer.close()
    return writer.rows, counts


def _write_postgres(
    export: Export, plan: ExportPlan, out, columns, outer_atomic: bool, on_progress=None, embed=None
) -> tuple[int, dict]:
    count_sql, count_params = export_count_sql(plan=plan)
    with connection.cursor() as cursor:
        # JIT compiles this once-per-export query for seconds and wins nothing back.
        cursor.execute("SET LOCAL jit = off")
        cursor.execute(EXPORT_WORK_MEM)
        cursor.execute(SESSION_UTC)
        cursor.execute(count_sql, count_params)
        total, low, high = cursor.fetchone()
        snapshot = None
        if not outer_atomic:
            cursor.execute("SELECT pg_export_snapshot()")
            snapshot = cursor.fetchone()[0]
    # Extra streams read the same snapshot on their own connections; inside an outer
    # transaction (tests) the rows may be uncommitted, so one stream does it all.
    streams = 1 if snapshot is None or total < PARALLEL_MIN_ROWS else stream_count()
    ranges = _id_ranges(low, high, streams)
    # Committed rows (a snapshot to share) are read as Arrow columns on connections of their
    # own; rows of an outer transaction only through this connection, as COPY text.
    arrow_reader = (
        snapshot is not None
        and export.format in ARROW_READ_FORMATS
        and getattr(settings, "REDRESS_EXPORT_ARROW_READER", True)
    )
    progress = Progress(
        export_id=export.pk,
        total=total,
        side_connection=not outer_atomic,
        same=False,
        callback=on_progress,
    )
    parts = [
        Part(
            plan=plan,
            mode=_mode(export.format),
            id_range=r,
            first=(n == 0),
            prefix=f"{temp_prefix(export)}part-",
            arrow_reader=arrow_reader,
        )
        for n, r in enumerate(ranges)
    ]
    try:
        if arrow_reader:
            rows = _run_arrow_parts(export.format, parts, out, columns, progress, snapshot, embed)
        else:
            rows = _run_parts(export.format, parts, out, columns, progress, snapshot, embed)
    finally:
        progress.close()
        for part in parts:
            part.discard()
    if rows != total:
        raise RuntimeError(f"wrote {rows} rows where the snapshot counted {total}")
    return rows, _split_counts(parts)


def _split_counts(parts: list[Part]) -> dict[str, int]:
    per_split = {name: 0 for name in SPLITS}
    for part in parts:
        for name, count in part.splits.items():
            per_split[name] += count
    return per_split


def _close_parquet(writer: ParquetWriter, parts: list[Part], embed) -> None:
    """Close a Parquet file whose rows are all written, its manifest in the footer."""
    writer.close(metadata=embed(writer.rows, _split_counts(parts)) if embed else None)


FLUSH_BYTES = 1 << 20
# Room for the hashed set of items holding a correction (see ``rows._CORRECTION``):
# PostgreSQL hashes it only if it fits in work_mem times hash_mem_multiplier, and otherwise scans
# the whole set for every row. 64 MB holds a few million item ids (and the feedback aggregate).
EXPORT_WORK_MEM = "SET LOCAL work_mem = '64MB'"
# Below this many rows one stream is as fast as several (connections cost more than they save).
PARALLEL_MIN_ROWS = 50_000
# Formats whose rows are read as Arrow columns (ADBC) when the build runs on committed rows:
# CSV stays COPY text, which is already its final form.
ARROW_READ_FORMATS = (Export.Format.JSONL, Export.Format.PARQUET)
# Timestamps are rendered by to_json in the session's time zone: UTC, as Python writes them.
SESSION_UTC = "SET LOCAL TimeZone = 'UTC'"
ARROW_READ_SETUP = ("SET LOCAL jit = off", EXPORT_WORK_MEM, SESSION_UTC)


def stream_count() -> int:
    configured = getattr(settings, "REDRESS_EXPORT_STREAMS", None)
    return max(1, configured or min(2, os.cpu_count() or 1))


def _mode(fmt: str) -> str:
    return "arrow" if fmt == Export.Format.PARQUET else fmt


def _id_ranges(low: int | None, high: int | None, streams: int) -> list[tuple[int, int] | None]:
    """Contiguous prediction-id ranges, one per stream, in export order."""
    if low is None or high is None or streams <= 1:
        return [None]
    step = (high - low + 1) / streams
    bounds = [low + round(step * k) for k in range(streams)] + [high + 1]
    return [(bounds[k], bounds[k + 1] - 1) for k in range(streams) if bounds[k] < bounds[k + 1]]


class Part:
    """One COPY stream over a range of prediction ids: straight into the export file (the
    first) or spooled into a temporary file, appended in order once the first is done."""

    def __init__(
        self,
        *,
        plan: ExportPlan,
        mode: str,
        id_range,
        first: bool,
        prefix: str = "redress-",
        arrow_reader: bool = False,
    ) -> None:
        self.plan, self.mode, self.id_range, self.first = plan, mode, id_range, first
        self.prefix = prefix
        self.query: str | None = None  # the Arrow reader's statement, parameters inlined
        if arrow_reader:
            sql, params = export_copy_sql(
                plan=plan, mode=mode, id_range=id_range, arrow_reader=True
            )
            self.query = inline(connection, sql, params)
        self.splits: Counter[str] = Counter()
        self.rows = 0
        self.spool: str | None = None
        self.error: BaseException | None = None
        self.cancelled = False

    def statement(self) -> tuple[str, dict]:
        sql, params = export_copy_sql(plan=self.plan, mode=self.mode, id_range=self.id_range)
        if self.mode == "jsonl":
            return f"COPY ({sql}) TO STDOUT", params
        header = "true" if self.mode == "csv" and self.first else "false"
        return f"COPY ({sql}) TO STDOUT WITH (FORMAT csv, HEADER {header})", params

    def records(self, raw_connection) -> Iterator[bytes]:
        statement, params = self.statement()
        with raw_connection.cursor() as cursor, cursor.copy(statement, params) as copy:
            yield from copy

    def copy_into(self, raw_connection, out, progress: Progress | None, done: list[int]) -> None:
        """Text modes: strip each record's split code, count it, write in 1 MiB blocks."""
        codes = Counter()
        buffer = bytearray()
        header = self.mode == "csv" and self.first
        for record in self.records(raw_connection):
            if self.cancelled:
                raise RuntimeError("cancelled")
            if header:
                header = False
            else:
                codes[record[0]] += 1
                done[0] += 1
            buffer += record[2:] if self.mode == "csv" else record[1:]
            if len(buffer) >= FLUSH_BYTES:
                _emit(self.mode, buffer, out)
                if progress is not None:
                    progress(done[0])
        _emit(self.mode, buffer, out)
        self.rows = sum(codes.values())
        self.splits.update({SPLIT_CODES[code]: n for code, n in codes.items()})

    def spool_into_file(self, raw_connection, done: list[int]) -> None:
        fd, self.spool = tempfile.mkstemp(prefix=self.prefix)
        with open(fd, "wb") as handle:
            if self.mode == "arrow":
                buffer = bytearray()
                for record in self.records(raw_connection):
                    if self.cancelled:
                        raise RuntimeError("cancelled")
                    buffer += record
                    done[0] += 1
                    if len(buffer) >= FLUSH_BYTES:
                        handle.write(buffer)
                        buffer.clear()
                handle.write(buffer)
            else:
                self.copy_into(raw_connection, handle, None, done)

    def append_spool(self, out) -> None:
        """Copy the spooled bytes (already in their final form) to ``out``."""
        with open(self.spool, "rb") as handle:
            while block := handle.read(FLUSH_BYTES):
                out.write(block)

    def discard(self) -> None:
        if self.spool and os.path.exists(self.spool):
            os.unlink(self.spool)

    # --- the Arrow reader (committed rows, see ``pg_arrow``) ---

    def batches(self, dsn: str, snapshot: str | None, done: list[int]) -> Iterator[pa.RecordBatch]:
        """This part's rows as Arrow record batches, counted into ``done`` as they come."""
        assert self.query is not None
        with record_batches(dsn, self.query, snapshot=snapshot, setup=ARROW_READ_SETUP) as reader:
            for batch in reader:
                if self.cancelled:
                    raise RuntimeError("cancelled")
                done[0] += batch.num_rows
                self.rows += batch.num_rows
                yield batch

    def tally(self, column: pa.Array) -> None:
        """Count rows per split from a split (or split-code) column."""
        for entry in pc.value_counts(column).to_pylist():
            value = entry["values"]
            self.splits[SPLIT_OF_CODE.get(value, value)] += entry["counts"]

    def lines_into(self, batches: Iterator[pa.RecordBatch], out, progress=None, done=None) -> None:
        """JSON lines: each batch's line column is one contiguous buffer, written as is."""
        for batch in batches:
            self.tally(batch.column(0))
            out.write(_string_bytes(batch.column(1)))
            if progress is not None:
                progress(done[0])


def _on_snapshot(snapshot: str | None, work: Callable[[Any], None]) -> None:
    """Run ``work(raw_connection)`` on a new connection reading the exported snapshot."""
    wrapper = connections.create_connection("default")
    try:
        wrapper.ensure_connection()
        raw = wrapper.connection
        raw.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        if snapshot:
            # Must come first in the transaction; the id is PostgreSQL's, not user input.
            raw.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
        raw.execute("SET LOCAL jit = off")
        raw.execute(EXPORT_WORK_MEM)
        raw.execute(SESSION_UTC)
        work(raw)
        raw.execute("COMMIT")
    finally:
        wrapper.close()


@contextmanager
def _spooling(parts: list[Part], spool: Callable[[Part], None]) -> Iterator[list[threading.Thread]]:
    """Run ``spool(part)`` for every part but the first, each in a thread, while the body
    handles the first; an error in the body cancels every part; the threads are always joined.
    A thread's own error is kept on its part, for the body to raise in order."""

    def run(part: Part) -> None:
        try:
            spool(part)
        except BaseException as exc:  # re-raised by the main thread
            part.error = exc

    threads = [
        threading.Thread(target=run, args=(part,), name=f"export-part-{n}")
        for n, part in enumerate(parts[1:], start=1)
    ]
    for thread in threads:
        thread.start()
    try:
        yield threads
    except BaseException:
        for part in parts:
            part.cancelled = True
        raise
    finally:
        for thread in threads:
            thread.join()


def _run_parts(fmt: str, parts: list[Part], out, columns, progress, snapshot, embed=None) -> int:
    done = [0]  # rows read by every stream, for progress (increments happen under the GIL)

    def spool(part: Part) -> None:
        _on_snapshot(snapshot, lambda raw: part.spool_into_file(raw, done))

    with _spooling(parts, spool) as threads:
        connection.ensure_connection()
        main = connection.connection
        if fmt == Export.Format.PARQUET:
            rows = _parquet_parts(parts, main, out, columns, progress, done, threads, embed)
        else:
            parts[0].copy_into(main, out, progress, done)
            for part, thread in zip(parts[1:], threads, strict=True):
                thread.join()
                if part.error is not None:
                    raise part.error
                part.append_spool(out)
                part.discard()
                progress(done[0])
            rows = sum(part.rows for part in parts)
    out.flush()
    return rows


def _run_arrow_parts(
    fmt: str, parts: list[Part], out, columns, progress, snapshot, embed=None
) -> int:
    """Every part read as Arrow batches on its own connection (the snapshot's), the first
    straight into the file, the others spooled (JSON lines, or Arrow IPC for Parquet) and
    appended in order once the first is done."""
    done = [0]
    dsn = conninfo(connection)
    writer = ParquetWriter(out, columns) if fmt == Export.Format.PARQUET else None
    convert = _arrow_converter(columns, writer) if writer is not None else None

    def spool(part: Part) -> None:
        fd, part.spool = tempfile.mkstemp(prefix=part.prefix)
        with open(fd, "wb") as handle:
            batches = part.batches(dsn, snapshot, done)
            if writer is None:
                part.lines_into(batches, handle)
                return
            with pa.ipc.new_stream(handle, writer.schema) as sink:
                for batch in batches:
                    sink.write_batch(convert(batch, part))

    try:
        with _spooling(parts, spool) as threads:
            first = parts[0]
            if writer is None:
                first.lines_into(first.batches(dsn, snapshot, done), out, progress, done)
            else:
                for batch in first.batches(dsn, snapshot, done):
                    writer.write_batch(convert(batch, first))
                    progress(done[0])
            for part, thread in zip(parts[1:], threads, strict=True):
                thread.join()
                if part.error is not None:
                    raise part.error
                if writer is None:
                    part.append_spool(out)
                else:
                    # Read, not memory-mapped: mapped pages would count in the worker's
                    # resident memory as they are touched (the whole spool by the end).
                    with (
                        pa.OSFile(part.spool, "rb") as source,
                        pa.ipc.open_stream(source) as stream,
                    ):
                        for batch in stream:
                            writer.write_batch(batch)
                part.discard()
                progress(done[0])
        if writer is not None:
            _close_parquet(writer, parts, embed)
    finally:
        if writer is not None:
            # Also on errors, so pyarrow never flushes into a closed file when collected.
            writer.close()
    out.flush()
    return sum(part.rows for part in parts)


def _string_bytes(array: pa.Array) -> memoryview | bytes:
    """The concatenated values of a string array without nulls, without a copy."""
    if array.null_count:
        raise RuntimeError("an export line was NULL")
    if len(array) == 0:
        return b""
    _, offsets, data = array.buffers()
    width = np.int64 if pa.types.is_large_string(array.type) else np.int32
    bounds = np.frombuffer(offsets, dtype=width)
    return memoryview(data)[bounds[array.offset] : bounds[array.offset + len(array)]]


def _arrow_converter(columns, writer: ParquetWriter):
    """``rows.arrow_converter`` for this writer, counting each batch's rows per split."""
    to_schema = arrow_converter(columns, writer.schema, writer.pool)

    def convert(batch: pa.RecordBatch, part: Part) -> pa.RecordBatch:
        converted = to_schema(batch)
        part.tally(batch.column("split"))
        return converted

    return convert


def _emit(fmt: str, buffer: bytearray, out) -> None:
    if not buffer:
        return
    data = bytes(buffer)
    buffer.clear()
    if fmt == "jsonl":
        # COPY's text format doubles every backslash; a JSON line holds no other character
        # COPY escapes (JSON escapes control characters itself), so this undoes it exactly.
        data = data.replace(b"\\\\", b"\\")
    out.write(data)


class CopyReader(io.RawIOBase):
    """COPY … TO STDOUT records as a readable byte stream, for pyarrow's CSV reader."""

    def __init__(self, records: Iterator[bytes], done: list[int]) -> None:
        self.records = records
        self.pending = bytearray()
        self.finished = False
        self.done = done

    def readable(self) -> bool:
        return True

    def peek(self) -> bool:
        """Whether any data comes at all (reads the first record ahead)."""
        record = next(self.records, None) if not self.pending else None
        if record is not None:
            self.pending += record
            self.done[0] += 1
        self.finished = self.finished or (record is None and not self.pending)
        return bool(self.pending)

    def read(self, size: int = -1) -> bytes:
        while not self.finished and (size < 0 or len(self.pending) < size):
            record = next(self.records, None)
            if record is None:
                self.finished = True
            else:
                self.pending += record
                self.done[0] += 1
        if size < 0 or size >= len(self.pending):
            data, self.pending = bytes(self.pending), bytearray()
        else:
            data = bytes(self.pending[:size])
            del self.pending[:size]
        return data

    def readinto(self, target) -> int:
        data = self.read(len(target))
        target[: len(data)] = data
        return len(data)


def _parquet_parts(parts, main, out, columns, progress, done, threads, embed=None) -> int:
    """Parquet from COPY … (FORMAT csv) parsed by pyarrow with explicit column types."""
    import pyarrow.csv as pacsv

    names = [name for name, _, _ in columns]
    read_types = {
        # Lists arrive as comma-joined slugs (comments as JSON text): the converter splits them.
        name: (pa.string() if kind == "list" else ARROW_TYPES[kind])
        for name, kind, _ in columns
    }
    writer = ParquetWriter(out, columns)
    convert = _arrow_converter(columns, writer)
    options = {
        # One parsing thread: the database streams are the bottleneck, and each extra thread
        # holds blocks of its own (peak memory).
        "read_options": pacsv.ReadOptions(
            column_names=names, block_size=256 << 10, use_threads=False
        ),
        # External ids and labels may hold line breaks (CSV quotes them).
        "parse_options": pacsv.ParseOptions(newlines_in_values=True),
        "convert_options": pacsv.ConvertOptions(
            column_types=read_types,
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,  # NULL is unquoted, '' is "" in COPY csv
            null_values=[""],
        ),
        "memory_pool": writer.pool,
    }

    def consume(reader, part: Part) -> None:
        for batch in reader:
            part.rows += batch.num_rows
            writer.write_batch(convert(batch, part))
            progress(done[0])

    try:
        first = parts[0]
        reader = CopyReader(first.records(main), done)
        if reader.peek():  # pyarrow refuses an empty CSV: no rows, no batches
            consume(pacsv.open_csv(reader, **options), first)
        for part, thread in zip(parts[1:], threads, strict=True):
            thread.join()
            if part.error is not None:
                raise part.error
            if os.path.getsize(part.spool):
                consume(pacsv.open_csv(part.spool, **options), part)
            part.discard()
        _close_parquet(writer, parts, embed)
    finally:
        # Also on errors, so pyarrow never flushes into a closed file when collected.
        writer.close()
    return writer.rows


def _sha256(path: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(FLUSH_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size
