"""Gold-set snapshots: the bytes of a published version as JSON lines, CSV or Parquet.

Only published versions: they are frozen, so the same version always gives the same bytes (the
writers and the column types are the export package's, ``labeling.exports``).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

from feedback.errors import Conflict, InvalidInput

from ..exports.engine import MANIFEST_KEY
from ..exports.manifest import JSON_STYLE
from ..exports.rows import GOLD_COLUMNS
from ..exports.writers import writer_for
from ..models import Export, GoldSetVersion
from ..selectors.exports import gold_items_for_export

FORMATS = tuple(Export.Format.values)


def _gold_row(item) -> dict:
    return {
        "key": item.key,
        "input": item.input,
        "output": item.output,
        "expected_verdict": item.expected_verdict or None,
        "expected_label": item.expected_label or None,
        "expected_categories": list(item.expected_categories or []),
        "segment": item.segment or {},
        "source_external_id": item.source_external_id or None,
        "source_model_version": item.source_model_version or None,
        "source_agreement": item.source_agreement,
        "source_agreeing_labels": item.source_agreeing_labels,
    }


def goldset_version_manifest(*, version: GoldSetVersion) -> dict:
    """What a snapshot file of a published version says about itself: which version, its
    checksum (of the canonical content, ``labeling.selectors.gold``), its items and columns.
    Embedded in Parquet's key-value metadata (``redress.manifest``); the JSON download beside
    JSON lines and CSV (``GET …/versions/{n}/manifest``). Nothing that changes after
    publication: the same version keeps giving the same bytes."""
    return {
        "project": version.gold_set.project.slug,
        "gold_set": version.gold_set.slug,
        "version": version.number,
        "checksum": version.checksum,
        "checksum_of": "the canonical content: items sorted by key (see the README)",
        "item_count": version.item_count,
        "published_at": version.published_at.isoformat() if version.published_at else None,
        "columns": [
            {"name": name, "type": kind, "nullable": nullable}
            for name, kind, nullable in GOLD_COLUMNS
        ],
        "order": "key",
        "json_style": JSON_STYLE,
    }


def goldset_version_snapshot(
    *, version: GoldSetVersion, fmt: str, chunk_size: int = 500
) -> Iterator[bytes]:
    """The bytes of a published version's snapshot, in chunks (items ordered by key).

    Only published versions: they are frozen, so the same version always gives the same bytes.
    """
    if fmt not in FORMATS:
        raise InvalidInput.one("format", "invalid_choice", f"One of {', '.join(FORMATS)}.")
    if version.status != GoldSetVersion.Status.PUBLISHED:
        raise Conflict.one("version", "not_published", "Only a published version can be exported.")
    items = gold_items_for_export(version=version)
    metadata = {
        MANIFEST_KEY: json.dumps(goldset_version_manifest(version=version), sort_keys=True).encode()
    }
    return _snapshot_chunks(items, fmt, chunk_size, metadata)


def _snapshot_chunks(items, fmt: str, chunk_size: int, metadata: dict) -> Iterator[bytes]:
    buffer = io.BytesIO()
    writer = writer_for(fmt, buffer, GOLD_COLUMNS)
    # Parquet records byte offsets in its footer: its buffer is only drained at the end.
    streaming = fmt != "parquet"
    chunk: list[dict] = []
    for item in items.iterator(chunk_size=chunk_size):
        chunk.append(_gold_row(item))
        if len(chunk) >= chunk_size:
            writer.write_rows(chunk)
            chunk = []
            if streaming:
                yield from _drain(buffer)
    if chunk:
        writer.write_rows(chunk)
    if fmt == "parquet":
        writer.close(metadata=metadata)
    else:
        writer.close()
    yield from _drain(buffer)


def _drain(buffer: io.BytesIO) -> Iterator[bytes]:
    data = buffer.getvalue()
    if data:
        buffer.seek(0)
        buffer.truncate()
        yield data


__all__ = ["goldset_version_manifest", "goldset_version_snapshot"]
