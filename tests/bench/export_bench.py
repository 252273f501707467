"""Export benchmark (PostgreSQL): 1,000,000 labeled rows in each format.

Each format is built by the real task (``labeling.tasks.export_build_task``, run by Celery's
``apply`` in a separate worker process, so its memory is its own), timed inside that process;
the worker reports its peak RSS (``VmHWM``) and its RSS once Django is loaded (the app's own
footprint, before the export). The files are then read back: JSON lines and CSV records counted,
Parquet's row count and schema read by pyarrow.

``run.py --sections exports`` calls ``bench_exports``; standalone:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/redress_xbench \\
        .venv/bin/python tests/bench/export_bench.py --rows 1000000
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TARGETS = {"jsonl_rows_per_s_min": 100_000, "parquet_rows_per_s_min": 150_000, "rss_mb_max": 300}

WORKER = """
import json, os, sys, time
sys.path.insert(0, {root!r})
import django
django.setup()
from labeling.models import Export
from labeling.tasks import export_build_task

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024
baseline = rss("VmRSS")
cpu0, started = time.process_time(), time.perf_counter()
status = export_build_task.apply(args=[{export_id}]).get()
seconds = time.perf_counter() - started
print(json.dumps({{"status": status, "seconds": seconds, "cpu_seconds": time.process_time() - cpu0,
                  "baseline_rss_mb": baseline, "peak_rss_mb": rss("VmHWM")}}))
"""


class BackendCpu:
    """CPU seconds (user + system) of the PostgreSQL backends serving one database, sampled
    from ``/proc`` (server on this machine) while an export runs: the database's share of the
    work, which the shared machine's load does not inflate the way it inflates wall time."""

    def __init__(self, dbname: str) -> None:
        import threading

        self.tag = f" {dbname} ".encode()
        self.seen: dict[int, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.tick = os.sysconf("SC_CLK_TCK")

    def _sample(self) -> None:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if self.tag not in handle.read().replace(b"\0", b" ") + b" ":
                        continue
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            self.seen[int(entry)] = (int(fields[11]) + int(fields[12])) / self.tick

    def _poll(self) -> None:
        while not self.stop.wait(0.05):
            self._sample()

    def __enter__(self) -> BackendCpu:
        self._sample()
        self.before = dict(self.seen)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self._sample()
        self.seconds = sum(v - self.before.get(pid, 0.0) for pid, v in self.seen.items())


def log(message: str) -> None:
    print(f"[export-bench] {message}", file=sys.stderr, flush=True)


def _read_back(fmt: str, path: str) -> dict[str, Any]:
    started = time.perf_counter()
    if fmt == "jsonl":
        rows = 0
        with open(path, "rb") as handle:
            for line in handle:
                rows += 1
                if rows == 1:
                    first = json.loads(line)
        result = {"rows": rows, "first_keys": list(first) if rows else []}
    elif fmt == "csv":
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            rows = sum(1 for _ in reader)
        result = {"rows": rows, "header": header}
    else:
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        result = {
            "rows": parquet.metadata.num_rows,
            "row_groups": parquet.metadata.num_row_groups,
            "schema": {field.name: str(field.type) for field in parquet.schema_arrow},
        }
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def bench_exports(rows: int = 1_000_000, formats: tuple[str, ...] = ("jsonl", "csv", "parquet")):
    from django.core.files.storage import default_storage
    from django.db import connection

    from feedback.models import Project
    from labeling.exports.request import export_request
    from labeling.models import Export, Queue
    from tests.bench.labeled_data import ensure_labeled_rows

    started = time.perf_counter()
    info = ensure_labeled_rows(rows)
    log(f"{rows:,} labeled rows ready in {time.perf_counter() - started:.1f} s")
    project = Project.objects.get(slug=info["project"])
    queue = Queue.objects.get(pk=info["queue"])
    connection.close()  # the worker processes open their own
    report: dict[str, Any] = {"rows": rows, "targets": TARGETS, "formats": {}}
    for fmt in formats:
        # Recorded as export_create would, without enqueueing: the worker below runs the task.
        spec = export_request({"queue": queue.pk, "format": fmt}).spec
        export = Export.objects.create(project=project, queue=queue, format=fmt, spec=spec)
        load_before = os.getloadavg()[0]
        with BackendCpu(connection.settings_dict["NAME"]) as backend_cpu:
            child = subprocess.run(
                [sys.executable, "-c", WORKER.format(root=str(ROOT), export_id=export.pk)],
                cwd=ROOT,
                env=os.environ.copy(),
                capture_output=True,
                text=True,
                check=False,
            )
        if child.returncode != 0:
            raise RuntimeError(f"export worker failed: {child.stderr[-3000:]}")
        measured = json.loads(child.stdout.strip().splitlines()[-1])
        export.refresh_from_db()
        if export.status != Export.Status.DONE:
            raise RuntimeError(f"export {fmt} {export.status}: {export.error}")
        read_back = _read_back(fmt, default_storage.path(export.file.name))
        assert read_back["rows"] == export.rows == rows, (read_back, export.rows)
        result = {
            "rows_per_s": round(export.rows / measured["seconds"]),
            "seconds": round(measured["seconds"], 2),
            "worker_cpu_seconds": round(measured["cpu_seconds"], 2),
            # Includes the worker's Django queries (claiming, counting, marking done): small.
            "postgres_cpu_seconds": round(backend_cpu.seconds, 2),
            "peak_rss_mb": round(measured["peak_rss_mb"], 1),
            "rss_after_django_setup_mb": round(measured["baseline_rss_mb"], 1),
            "bytes": export.size_bytes,
            "rows_per_split": export.rows_per_split,
            "sha256": export.checksum,
            "read_back": read_back,
            "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        }
        report["formats"][fmt] = result
        log(
            f"{fmt}: {result['rows_per_s']:,} rows/s, {result['seconds']} s, "
            f"CPU worker {result['worker_cpu_seconds']} s, "
            f"postgres {result['postgres_cpu_seconds']} s, "
            f"peak RSS {result['peak_rss_mb']} MB, {export.size_bytes:,} bytes, "
            f"load {result['loadavg_1m']}"
        )
        default_storage.delete(export.file.name)  # 1M rows: hundreds of MB each
    formats_done = report["formats"]
    report["meets"] = {
        "jsonl_rows_per_s": formats_done.get("jsonl", {}).get("rows_per_s", 0)
        >= TARGETS["jsonl_rows_per_s_min"],
        "parquet_rows_per_s": formats_done.get("parquet", {}).get("rows_per_s", 0)
        >= TARGETS["parquet_rows_per_s_min"],
        "peak_rss_mb": all(
            r["peak_rss_mb"] <= TARGETS["rss_mb_max"] for r in formats_done.values()
        ),
    }
    return report


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--formats", default="jsonl,csv,parquet")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    print(json.dumps(bench_exports(args.rows, tuple(args.formats.split(","))), indent=2))
