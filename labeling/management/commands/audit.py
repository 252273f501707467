"""``manage.py audit``: run a segment audit here, with a progress bar, and print its report.

    manage.py audit --project support-bot --queue 3 --segments locale,age_band --intersectional \\
        --positive-label approve [--reference overall|locale=en-US] [--min-n 30] \\
        [--tolerance 0.05] [--confidence 0.95] [--unweighted] [--model-version v2] \\
        [--format md|csv|json] [--output report.md]
    manage.py audit --project P --goldset g --gold-version 3 --model-version v2 --segments …
    manage.py audit --show 12 --format md        # the report of a stored audit

The audit is stored like one made over the API (so it appears in the admin and can be
compared), but computed in this process whatever its size. The bar goes to stderr, only on a
terminal; the report goes to stdout (or ``--output``).
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, OutputWrapper

from feedback.errors import ServiceError
from feedback.models import Project
from labeling.audit_reports import render_csv, render_json, render_markdown
from labeling.models import Audit
from labeling.payloads.audits import audit_request
from labeling.services.audits import audit_create, audit_run

RENDERERS = {"md": render_markdown, "csv": render_csv, "json": render_json}
BAR_WIDTH = 30


class ProgressBar:
    """``[#####.....]  40%  aggregating …  1.2 s`` redrawn in place on a terminal."""

    def __init__(self, stream: OutputWrapper) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.started = time.perf_counter()

    def __call__(self, fraction: float, stage: str) -> None:
        if not self.enabled:
            return
        filled = round(BAR_WIDTH * fraction)
        elapsed = time.perf_counter() - self.started
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        line = f"[{bar}] {fraction:4.0%}  {stage}  {elapsed:.1f} s"
        self.stream.write("\r" + line.ljust(100)[:100], ending="\n" if fraction >= 1 else "")
        self.stream.flush()


class Command(BaseCommand):
    help = "Run a segment-level error and fairness audit and print its report."

    def add_arguments(self, parser):
        parser.add_argument("--show", type=int, help="Print the report of a stored audit.")
        parser.add_argument("--project", help="The project's slug.")
        source = parser.add_mutually_exclusive_group()
        source.add_argument("--queue", type=int, help="Audit a queue's completed items.")
        source.add_argument("--export", type=int, help="Audit an export's items.")
        source.add_argument(
            "--goldset", help="Audit a gold set (with --gold-version, --model-version)."
        )
        parser.add_argument("--gold-version", type=int, help="With --goldset: the version number.")
        parser.add_argument("--model-version", help="Scored model version (gold) or a filter.")
        parser.add_argument("--segments", help="Comma-separated segment keys.")
        parser.add_argument("--intersectional", action="store_true")
        parser.add_argument("--positive-label")
        parser.add_argument("--reference", default="overall", help="overall, or key=value[,…].")
        parser.add_argument("--min-n", type=int, default=30)
        parser.add_argument("--tolerance", type=float, default=0.05)
        parser.add_argument("--confidence", type=float, default=0.95)
        parser.add_argument("--unweighted", action="store_true", help="Do not weight by 1/π.")
        parser.add_argument("--format", choices=sorted(RENDERERS), default="md")
        parser.add_argument("--output", help="Write the report here instead of stdout.")

    def handle(self, *args, **options):
        if options["show"] is not None:
            audit = Audit.objects.select_related("project").filter(pk=options["show"]).first()
            if audit is None:
                raise CommandError(f"No audit {options['show']}.")
        else:
            audit = self._run(options)
        if audit.status != Audit.Status.DONE:
            raise CommandError(f"Audit {audit.pk} is {audit.status}: {audit.error}")
        report = RENDERERS[options["format"]](audit)
        if options["output"]:
            with open(options["output"], "w", encoding="utf-8") as handle:
                handle.write(report)
            self.stderr.write(f"Audit {audit.pk}: report written to {options['output']}.")
        else:
            self.stdout.write(report, ending="")

    def _run(self, options: dict[str, Any]) -> Audit:
        project = Project.objects.filter(slug=options["project"] or "").first()
        if project is None:
            raise CommandError(f"No project {options['project']!r} (--project).")
        if options["queue"] is not None:
            source: dict[str, Any] = {"queue": options["queue"]}
        elif options["export"] is not None:
            source = {"export": options["export"]}
        elif options["goldset"]:
            source = {"goldset": options["goldset"], "version": options["gold_version"]}
        else:
            raise CommandError("Name a source: --queue, --export or --goldset.")
        if options["model_version"]:
            source["model_version"] = options["model_version"]
        reference: Any = options["reference"]
        if reference != "overall":
            try:
                reference = dict(part.split("=", 1) for part in reference.split(","))
            except ValueError as exc:
                raise CommandError("--reference is overall or key=value[,key=value].") from exc
        data = {
            "source": source,
            "segments": [k for k in (options["segments"] or "").split(",") if k],
            "intersectional": options["intersectional"],
            "positive_label": options["positive_label"],
            "reference": reference,
            "min_n": options["min_n"],
            "tolerance": options["tolerance"],
            "confidence": options["confidence"],
            "weighted": not options["unweighted"],
        }
        bar = ProgressBar(self.stderr)
        bar(0.0, "validating")
        try:
            # Stored pending and computed here, whatever its size, so the bar means something.
            sent = audit_request({"project": project.slug, **data})
            audit = audit_create(project=project, request=sent, run="caller")
        except ServiceError as exc:
            raise CommandError(
                "; ".join(f"{e.field or 'request'}: {e.detail}" for e in exc.errors)
            ) from exc
        return audit_run(audit_id=audit.pk, on_progress=bar)
