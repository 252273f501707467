"""Review work: queues, the sampling runs that fill them, items, leases and labels.

Rules live in ``labeling/services``; these models carry data and the constraints that back the
rules (one item per prediction per queue, one label per reviewer per item, one live lease per
reviewer per item).
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.db.models import Q

from feedback.models import Feedback, Prediction, Project


class Queue(models.Model):
    """Review work for one project, and the policy that samples it."""

    class Source(models.TextChoices):
        PREDICTIONS = "predictions", "Predictions"
        FEEDBACK = "feedback", "Predictions with feedback"
        DISPUTES = "disputes", "Open disputes"

    class Strategy(models.TextChoices):
        ALL = "all", "All"
        UNIFORM = "uniform", "Uniform"
        STRATIFIED = "stratified", "Stratified"
        UNCERTAINTY = "uncertainty", "Uncertainty (Poisson)"

    class Allocation(models.TextChoices):
        PROPORTIONAL = "proportional", "Proportional"
        EQUAL = "equal", "Equal"
        MINIMUM = "minimum", "Proportional with a minimum per stratum"

    class Consensus(models.TextChoices):
        MAJORITY = "majority", "Majority vote"
        DAWID_SKENE = "dawid_skene", "Dawid-Skene"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="queues")
    name = models.CharField(max_length=200)
    instructions = models.TextField(blank=True)
    label_choices = models.JSONField(default=list, blank=True)
    overlap = models.PositiveSmallIntegerField(default=1)
    lease_seconds = models.PositiveIntegerField(default=600)
    show_segments = models.BooleanField(
        default=False, help_text="Show segment attributes to reviewers (blind review otherwise)."
    )
    consensus = models.CharField(
        max_length=20, choices=Consensus.choices, default=Consensus.MAJORITY
    )
    reviewers = models.ManyToManyField(
        settings.AUTH_USER_MODEL, related_name="review_queues", blank=True
    )
    reviewer_group = models.ForeignKey(
        Group,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Everyone in this group may also label here.",
    )
    # Sampling policy.
    source = models.CharField(max_length=20, choices=Source.choices, default=Source.PREDICTIONS)
    filter = models.JSONField(default=dict, blank=True)
    strategy = models.CharField(max_length=20, choices=Strategy.choices, default=Strategy.ALL)
    size = models.PositiveIntegerField(null=True, blank=True)
    rate = models.FloatField(null=True, blank=True)
    strata = models.JSONField(default=list, blank=True)
    allocation = models.CharField(
        max_length=20, choices=Allocation.choices, default=Allocation.PROPORTIONAL
    )
    min_per_stratum = models.PositiveIntegerField(default=0)
    seed = models.BigIntegerField(null=True, blank=True)
    schedule_minutes = models.PositiveIntegerField(null=True, blank=True)
    last_scheduled_at = models.DateTimeField(null=True, blank=True)
    # Dawid-Skene: set by the first completion since the last refit, cleared when a refit
    # starts, so a burst of completions shares one refit (see ``item_consensus_update``).
    consensus_refit_requested_at = models.DateTimeField(null=True, blank=True, editable=False)
    active = models.BooleanField(default=True)
    # Hidden gold checks: this share of served items comes from the gold set's latest
    # published version, looking like any other item to the reviewer.
    gold_set = models.ForeignKey(
        "labeling.GoldSet",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="queues",
        help_text="Gold set whose published items are served as hidden checks.",
    )
    gold_rate = models.FloatField(
        default=0.0, help_text="Share of served items that are hidden gold checks (0 to 0.5)."
    )
    # labels.ready webhook: sent once this many items completed since the last one (0: never).
    notify_every = models.PositiveIntegerField(
        default=0,
        help_text="Send the labels.ready webhook event each time this many items have completed "
        "since the last one (a retraining trigger); 0 turns it off.",
    )
    labels_notified_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="queue_unique_name"),
            models.CheckConstraint(condition=Q(overlap__gte=1), name="queue_overlap_positive"),
            models.CheckConstraint(
                condition=Q(rate__isnull=True) | (Q(rate__gt=0) & Q(rate__lte=1)),
                name="queue_rate_0_1",
            ),
            models.CheckConstraint(
                condition=Q(gold_rate__gte=0) & Q(gold_rate__lte=0.5),
                name="queue_gold_rate_0_half",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.name}"


class SamplingRun(models.Model):
    """One draw into a queue: its seed, policy, population and sample per stratum."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    queue = models.ForeignKey(Queue, on_delete=models.CASCADE, related_name="runs")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    seed = models.BigIntegerField()
    policy = models.JSONField(
        default=dict, help_text="The queue's sampling policy at request time."
    )
    population = models.JSONField(default=dict, blank=True)
    sampled = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    trigger = models.CharField(max_length=20, default="manual")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["status", "created_at"], name="run_status_created")]

    def __str__(self) -> str:
        return f"run {self.pk} of {self.queue_id} ({self.status})"


class QueueItem(models.Model):
    """A prediction to review in a queue, with how it got there (π, stratum, run)."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        ADJUDICATION = "adjudication", "Waiting for adjudication"
        COMPLETE = "complete", "Complete"

    PRIORITY_DISPUTE = 100
    PRIORITY_DEFAULT = 0

    queue = models.ForeignKey(Queue, on_delete=models.CASCADE, related_name="items")
    # A production item reviews a prediction; a hidden gold check reviews a frozen gold item
    # instead. Exactly one of the two is set.
    prediction = models.ForeignKey(
        Prediction, null=True, blank=True, on_delete=models.CASCADE, related_name="queue_items"
    )
    gold_item = models.ForeignKey(
        "labeling.GoldItem",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="queue_items",
        help_text="Set on hidden gold checks only; never counted as a production label.",
    )
    feedback = models.ForeignKey(
        Feedback,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="queue_items",
        help_text="The dispute or feedback that brought the prediction here, if any.",
    )
    run = models.ForeignKey(
        SamplingRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="items"
    )
    inclusion_probability = models.FloatField()
    stratum = models.CharField(max_length=512, blank=True)
    priority = models.SmallIntegerField(default=PRIORITY_DEFAULT)
    status = models.CharField(max_length=15, choices=Status.choices, default=Status.OPEN)
    labels_count = models.PositiveSmallIntegerField(default=0)
    consensus = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-priority", "created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["queue", "prediction"], name="item_unique_per_queue"),
            models.UniqueConstraint(fields=["queue", "gold_item"], name="item_gold_once_per_queue"),
            models.CheckConstraint(
                condition=(Q(prediction__isnull=False) & Q(gold_item__isnull=True))
                | (Q(prediction__isnull=True) & Q(gold_item__isnull=False)),
                name="item_prediction_xor_gold",
            ),
            models.CheckConstraint(
                condition=Q(inclusion_probability__gt=0) & Q(inclusion_probability__lte=1),
                name="item_pi_0_1",
            ),
        ]
        indexes = [
            # The claim scans open items of a queue in priority, then age, order.
            models.Index(
                fields=["queue", "-priority", "created_at", "id"],
                condition=Q(status="open", gold_item__isnull=True),
                name="item_claim_order",
            ),
            models.Index(
                fields=["queue", "completed_at"],
                condition=Q(status="complete", gold_item__isnull=True),
                name="item_completed",
            ),
        ]

    def __str__(self) -> str:
        return f"item {self.pk} ({self.status})"


class Assignment(models.Model):
    """A lease: one reviewer holds one slot of an item until ``expires_at``."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUBMITTED = "submitted", "Submitted"
        RELEASED = "released", "Released"
        EXPIRED = "expired", "Expired"

    item = models.ForeignKey(QueueItem, on_delete=models.CASCADE, related_name="assignments")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    leased_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-leased_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["item", "reviewer"],
                condition=Q(status="active"),
                name="assignment_one_live_lease",
            )
        ]
        indexes = [
            models.Index(
                fields=["item", "expires_at"],
                condition=Q(status="active"),
                name="assignment_live_by_item",
            ),
            models.Index(
                fields=["reviewer", "expires_at"],
                condition=Q(status="active"),
                name="assignment_live_by_reviewer",
            ),
        ]

    def __str__(self) -> str:
        return f"lease {self.pk} on item {self.item_id} ({self.status})"


class Label(models.Model):
    """One reviewer's answer on one item. Edits keep history in ``LabelRevision``."""

    class Verdict(models.TextChoices):
        CORRECT = "correct", "Correct"
        INCORRECT = "incorrect", "Incorrect"
        UNSURE = "unsure", "Unsure"

    item = models.ForeignKey(QueueItem, on_delete=models.CASCADE, related_name="labels")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="labels"
    )
    verdict = models.CharField(max_length=10, choices=Verdict.choices)
    categories = models.JSONField(default=list, blank=True)
    true_label = models.CharField(max_length=200, blank=True)
    correction = models.JSONField(null=True, blank=True)
    notes = models.TextField(blank=True)
    seconds_spent = models.FloatField(null=True, blank=True)
    # On a hidden gold check: whether the answer matched the gold item's expectation.
    # Null on production labels.
    gold_correct = models.BooleanField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["item", "reviewer"], name="label_one_per_reviewer")
        ]

    def __str__(self) -> str:
        return f"{self.verdict} by {self.reviewer_id} on {self.item_id}"


class LabelRevision(models.Model):
    """The content of a label before an edit, with who changed it and when."""

    label = models.ForeignKey(Label, on_delete=models.CASCADE, related_name="revisions")
    content = models.JSONField()
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    changed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["changed_at", "id"]

    def __str__(self) -> str:
        return f"revision of label {self.label_id} at {self.changed_at:%Y-%m-%d %H:%M}"
