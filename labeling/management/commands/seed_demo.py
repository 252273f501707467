"""Demo data: a project, its taxonomy, predictions of two model versions with segments,
feedback and disputes, queues, labels by two simulated reviewers, a published gold set served as
hidden checks, two audits, and people to log in with. Idempotent: running it again adds nothing.

The story it tells: model version 2026-11-01 is worse than 2026-10-01 for the 65+ age band, and
the audits find it. The weekly sample is stratified by locale, and the locales differ in size, so
the items' weights 1/π differ. ann, ben and cy each label every item (overlap 3) and are not
perfect: where they tie the item waits for a project admin's adjudication, some of their
"incorrect" labels carry a correction, and the hidden gold checks they meet are answered right
and wrong. The schedule counts the seed's draw as its first, so beat draws again only a week
later.
"""

from __future__ import annotations

import random
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.utils import timezone

from feedback.errors import ServiceError
from feedback.models import Membership, Prediction, Project
from feedback.selectors import active_categories, project_context
from feedback.services.intake import feedback_submit, predictions_log
from feedback.services.projects import membership_grant, project_create
from labeling.models import GoldItem, GoldSet, Queue, QueueItem, SamplingRun
from labeling.payloads.audits import audit_request
from labeling.payloads.gold import gold_item_input
from labeling.payloads.labels import label_input
from labeling.payloads.queues import queue_input
from labeling.services.audits import audit_create
from labeling.services.claims import queue_claim_next
from labeling.services.goldsets import (
    gold_item_add,
    gold_item_promote,
    goldset_version_publish,
)
from labeling.services.goldsets import goldset_create as gold_set_create
from labeling.services.labels import item_label_submit
from labeling.services.queues import queue_create, queue_update
from labeling.services.sampling import policy_of, sampling_run_execute

SLUG = "demo"
# Locales of different sizes: the stratified sample's minimum per stratum over-samples the small
# ones, so their items weigh less (1/π) than those of en-US.
LOCALES = {"en-US": 0.45, "de-DE": 0.25, "fr-FR": 0.17, "es-ES": 0.13}
MODEL_VERSIONS = ["2026-10-01", "2026-11-01"]
WORSE_VERSION = "2026-11-01"  # worse for the 65+ age band than the one before
WEEK_MINUTES = 7 * 24 * 60
# How often each simulated reviewer misjudges an item, and how often they are unsure; ben also
# gets every other hidden gold check wrong, so the demo has gold answers both right and wrong.
MISTAKES = {"ann": 0.04, "ben": 0.09, "cy": 0.15}
UNSURE = 0.08
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
            model_version = rng.choice(MODEL_VERSIONS)
            # The new model version is worse for older users: the audits should find it.
            hit_rate = 0.2 if model_version == WORSE_VERSION and age_band == "65+" else 0.85
            predicted = intent if rng.random() < hit_rate else rng.choice(INTENTS)
            items.append(
                {
                    "external_id": f"chat-{n:05d}",
                    "model": "support-bot",
                    "model_version": model_version,
                    "input": {"message": QUESTIONS[intent].format(n=10_000 + n)},
                    "output": {
                        "reply": f"I can help with your {predicted} request.",
                        "intent": predicted,
                    },
                    "label": predicted,
                    "confidence": round(rng.uniform(0.35, 0.99), 3),
                    "segment": {
                        "locale": rng.choices(list(LOCALES), weights=list(LOCALES.values()))[0],
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

        for username in ("demo", "ann", "ben", "cy"):
            membership_grant(
                project=project, username=username, role=Membership.Role.REVIEWER, password="demo"
            )
        if settings.DEBUG:
            user_model = get_user_model()
            if not user_model.objects.filter(username="admin").exists():
                user_model.objects.create_superuser("admin", "admin@example.com", "admin")
            membership_grant(project=project, username="admin", role=Membership.Role.ADMIN)
        # Two queues: every open dispute first, then a stratified sample by locale with at
        # least 60 per locale so small segments can be audited. Drawn here, inline, so the demo
        # reviewer has work at once (later draws run in Celery).
        disputes = queue_create(
            project=project,
            data=queue_input({
                "project": project.slug,
                "name": "Disputes",
                "instructions": "The user disputes this answer. Was the answer right?",
                "overlap": 1,
                "reviewers": ["demo"],
                "sampling": {"source": "disputes"},
            }),
        )
        weekly = queue_create(
            project=project,
            data=queue_input({
                "project": project.slug,
                "name": "Weekly quality sample",
                "instructions": "Is the reply correct and helpful for the customer's message?",
                "label_choices": INTENTS,
                "overlap": 3,
                "reviewers": ["demo", "ann", "ben", "cy"],
                "sampling": {
                    "strategy": "stratified",
                    "size": 300,
                    "strata": ["locale"],
                    "allocation": "minimum",
                    "min_per_stratum": 60,
                    "seed": 7,
                    "schedule_minutes": WEEK_MINUTES,
                },
            }),
        )
        queued = 0
        for queue in (disputes, weekly):
            run = SamplingRun.objects.create(
                queue=queue, seed=7, policy=policy_of(queue), trigger="seed_demo"
            )
            queued += sum(sampling_run_execute(run_id=run.pk).sampled.values())
        # ann, ben and cy label part of the sample, a gold set is made from their clear answers and
        # served as hidden checks, then they label more (meeting checks) and leave the rest.
        total = QueueItem.objects.filter(queue=weekly).count()
        reviewers = _Reviewers(project, rng)
        labeled = reviewers.label(weekly, items=int(total * 0.5))
        gold = self._gold_checks(project, weekly)
        labeled += reviewers.label(weekly, items=int(total * 0.35))
        # The seed's draw is the schedule's first: beat draws again a week from now, not at
        # its first tick.
        Queue.objects.filter(pk=weekly.pk).update(last_scheduled_at=timezone.now())
        # One audit of the whole sample, and one per model version (compare them in the admin).
        audits = [
            audit_create(
                project=project,
                request=audit_request(
                    {
                        "project": SLUG,
                        "source": {"queue": weekly.pk}
                        | ({"model_version": version} if version else {}),
                        "segments": ["age_band", "locale"],
                        "intersectional": False,
                        "positive_label": "refund",
                        "min_n": 20,  # a model version's share of the sample is small
                    }
                ),
                run="now",
            )
            for version in (None, *MODEL_VERSIONS)
        ]
        self.stdout.write(
            f"Demo project {SLUG!r}: {len(items)} predictions, {stored} feedback; "
            f"2 queues with {queued} items, {labeled} labels by ann, ben and cy (overlap 3); gold "
            f"set {gold.slug!r} v1 served as hidden checks; audits "
            f"{', '.join(str(a.pk) for a in audits)} (all, then one per model version); "
            "log in as demo/demo (reviewer)"
            + (" or admin/admin (superuser)" if settings.DEBUG else "")
        )

    def _gold_checks(self, project: Project, queue) -> GoldSet:
        """A gold set of replies two reviewers agreed on and replies checked by hand, published
        and served as hidden checks in the weekly queue (15% of claims). A check is never served
        to a reviewer who labeled its source prediction, so ann, ben and cy meet the
        hand-checked ones."""
        gold_set = gold_set_create(
            project=project,
            slug="support-checks",
            name="Support answers checked by hand",
            description="Replies two reviewers agreed on, and replies checked by hand.",
        )
        draft = gold_set.versions.get(number=1)
        completed = QueueItem.objects.filter(
            queue=queue, status=QueueItem.Status.COMPLETE, gold_item__isnull=True
        ).order_by("id")
        promoted = 0
        for item in completed:
            try:  # only a clear consensus is promoted
                gold_item_promote(version=draft, item_id=item.pk)
            except ServiceError:
                continue
            promoted += 1
            if promoted == 6:
                break
        outside = Prediction.objects.filter(project=project).exclude(
            pk__in=QueueItem.objects.filter(prediction__isnull=False).values("prediction_id")
        )
        for prediction in outside.order_by("id")[:12]:
            truth = _truth(prediction.input["message"])
            right = truth == prediction.label
            gold_item_add(
                version=draft,
                item=gold_item_input({
                    "key": prediction.external_id,
                    "input": prediction.input,
                    "output": prediction.output,
                    "expected": {
                        "verdict": "correct" if right else "incorrect",
                        "label": truth,
                        "categories": [] if right else ["incorrect"],
                    },
                    "segment": prediction.segment,
                }),
            )
        goldset_version_publish(version=draft, notes="Seeded by seed_demo.")
        queue_update(
            queue=queue,
            data=queue_input({"gold_set": gold_set.slug, "gold_rate": 0.15}, partial=True),
        )
        return gold_set


def _truth(message: str) -> str:
    """The intent a customer's message really has (the demo's messages come from QUESTIONS)."""
    return next(
        (name for name, text in QUESTIONS.items() if text.split("{")[0] in message), "other"
    )


class _Reviewers:
    """ann, ben and cy, labeling through the same services as people. Each misjudges some items
    (MISTAKES: they miss a wrong prediction, or call a right one wrong) and is sometimes unsure,
    so they disagree: the dissenter's agreement with consensus drops, and a tie (two decided
    votes against each other beside an unsure one) goes to adjudication. Hidden gold checks are
    answered right, except that ben gets every other check he meets wrong."""

    def __init__(self, project: Project, rng: random.Random):
        user_model = get_user_model()
        self.people = [user_model.objects.get(username=name) for name in MISTAKES]
        self.categories = set(active_categories(project_id=project.pk))
        self.rng = rng
        self.checks_seen = dict.fromkeys(MISTAKES, 0)

    def label(self, queue, *, items: int) -> int:
        """Each labels the next ``items`` items (claiming in turn); returns labels made."""
        labels, wanted = 0, items * len(self.people)
        for _ in range(wanted + 60):  # hidden checks take claims too
            if labels >= wanted:
                break
            reviewer = self.people[labels % len(self.people)]
            lease = queue_claim_next(queue=queue, reviewer=reviewer)
            if lease is None:
                break
            item = QueueItem.objects.select_related("prediction", "gold_item").get(
                pk=lease.item_id
            )
            item_label_submit(
                item_id=item.pk,
                reviewer=reviewer,
                answer=label_input(self._judge(item, reviewer.username)),
                categories=self.categories,
            )
            labels += 1
        return labels

    def _judge(self, item: QueueItem, username: str) -> dict:
        if item.gold_item_id is not None:
            gold: GoldItem = item.gold_item
            predicted = (gold.output or {}).get("intent", "")
            believed = gold.expected_label or _truth((gold.input or {}).get("message", ""))
            self.checks_seen[username] += 1
            if username == "ben" and self.checks_seen[username] % 2 == 1:
                believed = next(i for i in INTENTS if i != believed)  # a wrong answer
        else:
            prediction = item.prediction
            predicted = prediction.label
            believed = _truth(prediction.input["message"])
            if self.rng.random() < UNSURE:
                return {"verdict": "unsure", "seconds_spent": round(self.rng.uniform(20, 60), 1)}
            if self.rng.random() < MISTAKES[username]:
                # A mistake: a wrong prediction passes, or a right one is called wrong.
                believed = (
                    predicted
                    if believed != predicted
                    else self.rng.choice([i for i in INTENTS if i != predicted])
                )
        right = believed == predicted
        data = {
            "verdict": "correct" if right else "incorrect",
            "true_label": believed,
            "categories": [] if right else ["incorrect"],
            "seconds_spent": round(self.rng.uniform(4, 40), 1),
        }
        if not right and self.rng.random() < 0.5:
            data["correction"] = f"Route this to {believed}: the customer asks about {believed}."
        return data
