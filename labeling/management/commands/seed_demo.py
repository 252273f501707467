"""Demo data: a project, its taxonomy, predictions with segments, feedback and disputes,
queues, labels by two simulated reviewers, a published gold set served as hidden checks, an
audit, and people to log in with. Idempotent: running it again adds nothing.

The model is deliberately worse for the 65+ age band, so the demo audit has a real finding.
"""

from __future__ import annotations

import random
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.utils import timezone

from feedback.models import Membership, Project
from feedback.selectors import active_categories, project_context
from feedback.services.intake import feedback_submit, predictions_log
from feedback.services.projects import membership_grant, project_create
from labeling.models import GoldSet, QueueItem, SamplingRun
from labeling.services.audits import audit_create
from labeling.services.claims import queue_claim_next
from labeling.services.goldsets import gold_item_promote, goldset_version_publish
from labeling.services.goldsets import goldset_create as gold_set_create
from labeling.services.labels import item_label_submit
from labeling.services.queues import queue_create, queue_update
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
        parser.add_argument("--predictions", type=int, default=1500)

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
            age_band = rng.choice(AGE_BANDS)
            # The demo model is worse for older users: the audit should find it.
            hit_rate = 0.5 if age_band == "65+" else 0.85
            predicted = intent if rng.random() < hit_rate else rng.choice(INTENTS)
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
                        "age_band": age_band,
                    },
                    "occurred_at": (now - timedelta(minutes=5 * (predictions - n))).isoformat(),
                }
            )
        predictions_log(context=context, items=items)

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

        for username in ("demo", "ann", "ben"):
            membership_grant(
                project=project, username=username, role=Membership.Role.REVIEWER, password="demo"
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
                "reviewers": ["demo", "ann", "ben"],
                "sampling": {
                    "strategy": "stratified",
                    "size": 500,
                    "strata": ["locale"],
                    "allocation": "minimum",
                    "min_per_stratum": 60,
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
        labeled = self._simulate_reviewers(project, weekly, rng)
        gold = self._gold_checks(project, weekly)
        audit = audit_create(
            project=project,
            data={
                "project": SLUG,
                "source": {"queue": weekly.pk},
                "segments": ["age_band", "locale"],
                "intersectional": False,
                "positive_label": "refund",
            },
            run="now",
        )
        self.stdout.write(
            f"Demo project {SLUG!r}: {len(items)} predictions, {stored} feedback; "
            f"2 queues with {queued} items, {labeled} labeled by ann and ben; gold set "
            f"{gold.slug!r} v1 served as hidden checks; audit {audit.pk} ({audit.status}); "
            "log in as demo/demo (reviewer)"
            + (" or admin/admin (superuser)" if settings.DEBUG else "")
        )

    def _simulate_reviewers(self, project: Project, queue, rng: random.Random) -> int:
        """ann and ben label most of the weekly sample, through the same services as people:
        mostly right, so consensus and agreement look like real work. demo/demo keeps the rest.
        """
        user_model = get_user_model()
        categories = set(active_categories(project_id=project.pk))
        total = QueueItem.objects.filter(queue=queue).count()
        labeled = 0
        for username in ("ann", "ben") * total:
            if labeled >= total * 0.8:
                break
            reviewer = user_model.objects.get(username=username)
            lease = queue_claim_next(queue=queue, reviewer=reviewer)
            if lease is None:
                break
            item = QueueItem.objects.select_related("prediction").get(pk=lease.item_id)
            intent = item.prediction.input["message"] if item.prediction else ""
            truth = next(
                (name for name, text in QUESTIONS.items() if text.split("{")[0] in intent),
                "other",
            )
            right = item.prediction is not None and item.prediction.label == truth
            if rng.random() < 0.05:  # reviewers are not perfect either
                right = not right
            item_label_submit(
                item_id=item.pk,
                reviewer=reviewer,
                data={
                    "verdict": "correct" if right else "incorrect",
                    "true_label": truth,
                    "categories": [] if right else ["incorrect"],
                    "seconds_spent": round(rng.uniform(4, 40), 1),
                },
                categories=categories,
            )
            labeled += 1
        return labeled

    def _gold_checks(self, project: Project, queue) -> GoldSet:
        """Promote a dozen completed items into a gold set, publish it, and serve it as hidden
        checks in the weekly queue (10% of claims)."""
        gold_set = gold_set_create(
            project=project,
            slug="support-checks",
            name="Support answers checked by hand",
            description="A dozen replies whose verdict two reviewers would sign.",
        )
        draft = gold_set.versions.get(number=1)
        completed = QueueItem.objects.filter(
            queue=queue, status=QueueItem.Status.COMPLETE, gold_item__isnull=True
        ).order_by("id")[:12]
        for item in completed:
            gold_item_promote(version=draft, item_id=item.pk)
        goldset_version_publish(version=draft, notes="Seeded by seed_demo.")
        queue_update(queue=queue, data={"gold_set": gold_set.slug, "gold_rate": 0.1})
        return gold_set
