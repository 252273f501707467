"""``manage.py export <project> --format jsonl|csv|parquet [options]``: build an export.

By default the export is built in this process (the task enqueued after commit then finds it
already claimed and does nothing); ``--worker`` leaves it to a Celery worker and waits for it.
On a terminal stdout shows a progress bar; otherwise plain progress lines (every 10 %).
The last lines give the export id, rows per split, the sha256 and the file's storage path
(``--output`` also copies the file to a local path).
"""

from __future__ import annotations

import json
import shutil
import time
from typing import Any

from django.core.files.storage import default_storage
from django.core.management.base import BaseCommand, CommandError
from kombu.exceptions import OperationalError as BrokerError

from feedback.errors import ServiceError
from feedback.models import Project
from labeling.exports.request import export_request
from labeling.models import Export
from labeling.services.exports import export_build, export_create

BAR_WIDTH = 30


class Command(BaseCommand):
    help = "Export a project's (or a queue's) labeled items as JSONL, CSV or Parquet."

    def add_arguments(self, parser):
        parser.add_argument("project", help="The project's slug.")
        parser.add_argument("--format", required=True, choices=list(Export.Format.values))
        parser.add_argument("--queue", type=int, default=None, help="Only this queue's items.")
        parser.add_argument(
            "--filter",
            default=None,
            help='JSON, e.g. \'{"model_version": "v2", "segment": {"locale": "de-DE"}}\'',
        )
        parser.add_argument(
            "--split",
            default=None,
            help='JSON, e.g. \'{"train": 0.8, "validation": 0.1, "test": 0.1, '
            '"key": "external_id", "seed": 0}\'',
        )
        parser.add_argument("--include-labels", action="store_true")
        parser.add_argument(
            "--keep-gold-in-train",
            action="store_true",
            help="Let gold-set rows fall in train (exclude_gold_from_train=false).",
        )
        parser.add_argument(
            "--worker", action="store_true", help="Let a Celery worker build it; wait for it."
        )
        parser.add_argument("--output", default=None, help="Also copy the file to this path.")
        parser.add_argument("--timeout", type=float, default=3600, help="With --worker.")

    def handle(self, *args, **options) -> None:
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"No project {options['project']!r}.")
        data: dict[str, Any] = {
            "queue": options["queue"],
            "format": options["format"],
            "include_labels": options["include_labels"],
            "exclude_gold_from_train": not options["keep_gold_in_train"],
        }
        for name in ("filter", "split"):
            if options[name]:
                try:
                    data[name] = json.loads(options[name])
                except json.JSONDecodeError as exc:
                    raise CommandError(f"--{name} is not JSON: {exc}") from exc
        try:
            export = export_create(project=project, request=export_request(data))
        except ServiceError as exc:
            raise CommandError("; ".join(f"{e.field}: {e.detail}" for e in exc.errors)) from exc
        except BrokerError as exc:
            # The enqueue after commit failed: the export is stored; build it here anyway.
            self.stderr.write(f"Could not reach the broker ({exc}).")
            export = Export.objects.order_by("-pk").filter(project=project).first()
        self.stdout.write(f"Export {export.pk} ({export.format}) of {project.slug}")
        self._last_step = -1
        if options["worker"]:
            export = self._wait(export.pk, options["timeout"])
        else:
            export = export_build(export_id=export.pk, on_progress=self._draw)
            if export.status not in (Export.Status.DONE, Export.Status.FAILED):
                # A running worker took the enqueued task first and claimed the build: wait for
                # it rather than report "running" as a failure (seen with make run on Redis).
                export = self._wait(export.pk, options["timeout"])
        if export.status != Export.Status.DONE:
            raise CommandError(f"Export {export.pk} {export.status}: {export.error}")
        self._draw(export.rows, export.rows)
        if self.stdout.isatty():
            self.stdout.write("")  # end the bar's line
        splits = ", ".join(
            f"{name} {export.rows_per_split.get(name, 0):,}"
            for name in ("train", "validation", "test")
        )
        self.stdout.write(f"rows: {export.rows:,} ({splits})")
        self.stdout.write(f"sha256: {export.checksum}")
        self.stdout.write(f"size: {export.size_bytes:,} bytes")
        self.stdout.write(f"file: {export.file.name}")
        if options["output"]:
            with (
                default_storage.open(export.file.name, "rb") as source,
                open(options["output"], "wb") as target,
            ):
                shutil.copyfileobj(source, target, 1 << 20)
            self.stdout.write(f"copied to: {options['output']}")

    def _wait(self, export_id: int, timeout: float) -> Export:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            export = Export.objects.get(pk=export_id)
            if export.status in (Export.Status.DONE, Export.Status.FAILED):
                return export
            self._draw(int(export.progress * 1000), 1000)
            time.sleep(0.5)
        raise CommandError(f"Export {export_id} still not done after {timeout:.0f} s.")

    def _draw(self, rows: int, total: int) -> None:
        share = rows / total if total else 1.0
        if self.stdout.isatty():
            filled = int(share * BAR_WIDTH)
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            self.stdout.write(f"\r[{bar}] {share:6.1%}  {rows:,}/{total:,} rows", ending="")
            self.stdout.flush()
            return
        step = int(share * 10)  # a plain line every 10 %, for logs
        if step != self._last_step:
            self._last_step = step
            self.stdout.write(f"progress {share:.0%} ({rows:,} of {total:,} rows)")
