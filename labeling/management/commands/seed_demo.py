"""Demo data: a project, its taxonomy, predictions with segments, feedback and disputes, and
people to log in with. Idempotent: running it again adds nothing."""

from __future__ import annotations

import random
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.utils import timezone

from feedback.models import Membership, Project
from feedback.selectors import project_context
from feedback.services.intake import feedback_submit, predictions_log
from feedback.services.projects import membership_grant, project_create
from labeling.models import SamplingRun
from labeling.services.queues import queue_create
from labeling.services.sampling import policy_of, sampling_run_execute

SLUG = "demo"
LOCALES = ["en-US", "de-DE", "fr-FR", "es-ES"]
DEVICES = ["ios", "android", "web"]
AGE_BANDS = ["18-24", "25-44", "45-64", "65+"]
INTENTS = ["refund", "shipping", "account", "other"]
QUESTIONS = {
    "refund": "Can I get my money back for order {n}?",
    "shipping": "Where is my parcel {n}?",
    "account": "I cannot log into my account, what now?",
    "other": "Do you sell gift cards?",
}
COMMENTS = [
    "The answer is wrong, I never ordered that.",
    "It ignored half of my question.",
    "Rude tone. Call me back on +1 415 555 0100 please.",
    "It assumed I do not understand technology because of my age.",
    "Took forever.",
    "Send the details to jane.doe@example.com instead.",
]


class Command(BaseCommand):
    help = "Load demo data (project 'demo', predictions, feedback, disputes, user demo/demo)."

    def add_arguments(self, parser):
        parser.add_argument("--predictions", type=int, default=300)

    def handle(self, *args, predictions: int, **options):
        if Project.objects.filter(slug=SLUG).exists():
            self.stdout.write(f"Demo project {SLUG!r} exists already; nothing to do.")
            return
        project = project_create(slug=SLUG, name="Demo support bot")
        context = project_context(project=project)
        rng = random.Random(7)
        now = timezone.now()
        items = []
        for n in range(predictions):
            intent = rng.choice(INTENTS)
            predicted = intent if rng.random() < 0.8 else rng.choice(INTENTS)
            items.append(
                {
                    "external_id": f"chat-{n:05d}",
                    "model": "support-bot",
                    "model_version": rng.choice(["2026-10-01", "2026-11-01"]),
                    "input": {"message": QUESTIONS[intent].format(n=10_000 + n)},
                    "output": {
                        "reply": f"I can help with your {predicted} request.",
                        "intent": predicted,
                    },
                    "label": predicted,
                    "confidence": round(rng.uniform(0.35, 0.99), 3),
                    "segment": {
                        "locale": rng.choice(LOCALES),
                        "device": rng.choice(DEVICES),
                        "age_band": rng.choice(AGE_BANDS),
                    },
                    "occurred_at": (now - timedelta(minutes=5 * (predictions - n))).isoformat(),
                }
            )
        predictions_log(context=context, items=items, prefix_items=True)

        feedback = []
        for item in rng.sample(items, k=predictions // 3):
            kind = rng.choices(["rating", "report", "dispute"], weights=[5, 3, 1])[0]
            entry = {
                "prediction": item["external_id"],
                "kind": kind,
                "end_user": f"user-{rng.randrange(1000)}",
            }
            if kind == "rating":
                entry["rating"] = rng.choice([1, 1, -1])
            else:
                entry["categories"] = rng.sample(
                    ["incorrect", "incomplete", "unsafe", "biased", "off_topic", "too_slow"],
                    k=rng.choice([1, 2]),
                )
                entry["comment"] = rng.choice(COMMENTS)
                if rng.random() < 0.5:
                    entry["correction"] = "It should have routed me to refunds."
            feedback.append(entry)
        results = feedback_submit(context=context, items=feedback)
        stored = sum(result.ok for result in results)

        membership_grant(
            project=project, username="demo", role=Membership.Role.REVIEWER, password="demo"
        )
        if settings.DEBUG:
            user_model = get_user_model()
            if not user_model.objects.filter(username="admin").exists():
                user_model.objects.create_superuser("admin", "admin@example.com", "admin")
            membership_grant(project=project, username="admin", role=Membership.Role.ADMIN)
        # Two queues: every open dispute first, then a stratified sample by locale with at
        # least 10 per locale so small segments can be audited. Drawn here, inline, so the demo
        # reviewer has work at once (later draws run in Celery).
        disputes = queue_create(
            project=project,
            data={
                "name": "Disputes",
                "instructions": "The user disputes this answer. Was the answer right?",
                "overlap": 1,
                "reviewers": ["demo"],
                "sampling": {"source": "disputes"},
            },
        )
        weekly = queue_create(
            project=project,
            data={
                "name": "Weekly quality sample",
                "instructions": "Is the reply correct and helpful for the customer's message?",
                "label_choices": INTENTS,
                "overlap": 1,
                "reviewers": ["demo"],
                "sampling": {
                    "strategy": "stratified",
                    "size": 60,
                    "strata": ["locale"],
                    "allocation": "minimum",
                    "min_per_stratum": 10,
                    "seed": 7,
                    "schedule_minutes": 1440,
                },
            },
        )
        queued = 0
        for queue in (disputes, weekly):
            run = SamplingRun.objects.create(
                queue=queue, seed=7, policy=policy_of(queue), trigger="seed_demo"
            )
            queued += sum(sampling_run_execute(run_id=run.pk).sampled.values())
        self.stdout.write(
            f"Demo project {SLUG!r}: {len(items)} predictions, {stored} feedback; "
            f"2 queues with {queued} items; log in as demo/demo (reviewer)"
            + (" or admin/admin (superuser)" if settings.DEBUG else "")
        )
