"""``manage.py sample_queue <queue_id> [--seed N] [--now]``: request a sampling run.

Without ``--now`` the run is recorded as pending and its draw enqueued after commit, exactly as
"Sample now" in the admin does; a worker draws it. With ``--now`` the draw happens in this
process, in the transaction that records the run, so the table below is the outcome; the task
enqueued after commit then finds the run done and does nothing.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from kombu.exceptions import OperationalError as BrokerError

from labeling.models import Queue, SamplingRun
from labeling.services.sampling import sampling_run_execute, sampling_run_request


class Command(BaseCommand):
    help = "Request a sampling run for a queue; with --now, draw it here and print the outcome."

    def add_arguments(self, parser):
        parser.add_argument("queue_id", type=int)
        parser.add_argument(
            "--seed", type=int, default=None, help="Default: the queue's seed, else random."
        )
        parser.add_argument(
            "--now", action="store_true", help="Draw in this process instead of a worker."
        )

    def handle(self, *args, queue_id: int, seed: int | None, now: bool, **options):
        queue = Queue.objects.select_related("project").filter(pk=queue_id).first()
        if queue is None:
            raise CommandError(f"No queue {queue_id}.")
        try:
            with transaction.atomic():
                run = sampling_run_request(queue=queue, seed=seed, trigger="command")
                if now:
                    run = sampling_run_execute(run_id=run.pk)
        except BrokerError as exc:
            # Raised by the enqueue after commit: the run is stored (and drawn, with --now);
            # the periodic sweep (sampling_runs_recover) enqueues what is still pending.
            self.stderr.write(f"Could not reach the broker ({exc}); the run is stored.")
            run = SamplingRun.objects.get(pk=run.pk)

        self.stdout.write(f"Run {run.pk} of {queue} (seed {run.seed}): {run.status}")
        if run.status == SamplingRun.Status.PENDING:
            self.stdout.write("A worker draws it; see the queue's dashboard in the admin.")
            return
        if run.status == SamplingRun.Status.FAILED:
            raise CommandError(f"Run {run.pk} failed: {run.error}")
        self._table(run)

    def _table(self, run: SamplingRun) -> None:
        population, sampled = run.population or {}, run.sampled or {}
        rows = [
            (stratum or "(all)", population[stratum], sampled.get(stratum, 0))
            for stratum in sorted(population)
        ]
        rows.append(("total", sum(population.values()), sum(sampled.values())))
        width = max(len("stratum"), *(len(name) for name, _, _ in rows))
        self.stdout.write(f"{'stratum':<{width}}  {'population':>10}  {'sampled':>7}")
        for name, n_population, n_sampled in rows:
            self.stdout.write(f"{name:<{width}}  {n_population:>10}  {n_sampled:>7}")
