"""Beat tasks: fold new rows into the rollups, then evaluate the active alert rules."""

from __future__ import annotations

from celery import shared_task

from .alerts import rules_evaluate
from .rollups import rollups_step


@shared_task
def rollups_step_task() -> dict:
    return rollups_step()


@shared_task
def alerts_evaluate_task() -> int:
    rollups_step()  # rules read rollups: bring them up to date first (idempotent)
    return rules_evaluate()
