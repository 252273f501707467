"""Queue configuration in and out, sampling runs, labels, claims and stats."""

from __future__ import annotations

from rest_framework import serializers

from feedback.api.serializers import AnyJSONField, CorrectionField, SegmentField

from ..models import Label, Queue, SamplingRun


class StrictSerializer(serializers.Serializer):
    """Refuses unknown keys (400 naming them) instead of dropping them silently."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {
                        name: [serializers.ErrorDetail("Unknown field.", code="unknown_field")]
                        for name in unknown
                    }
                )
        return super().to_internal_value(data)


class SamplingFilterSerializer(StrictSerializer):
    model_version = serializers.CharField(required=False)
    kinds = serializers.ListField(
        child=serializers.ChoiceField(["rating", "report", "dispute"]), required=False
    )
    categories = serializers.ListField(child=serializers.CharField(), required=False)
    created_after = serializers.DateTimeField(required=False)
    created_before = serializers.DateTimeField(required=False)
    segment = SegmentField(required=False)


class SamplingSerializer(StrictSerializer):
    source = serializers.ChoiceField(Queue.Source.choices, required=False)
    filter = SamplingFilterSerializer(required=False)
    strategy = serializers.ChoiceField(Queue.Strategy.choices, required=False)
    size = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    rate = serializers.FloatField(min_value=0, max_value=1, required=False, allow_null=True)
    strata = serializers.ListField(child=serializers.CharField(), required=False)
    allocation = serializers.ChoiceField(Queue.Allocation.choices, required=False)
    min_per_stratum = serializers.IntegerField(min_value=0, required=False)
    seed = serializers.IntegerField(required=False, allow_null=True)
    schedule_minutes = serializers.IntegerField(min_value=1, required=False, allow_null=True)


class QueueSerializer(serializers.ModelSerializer):
    """A queue's configuration (API.md, "Queues and labeling")."""

    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    gold_set = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    reviewers = serializers.SerializerMethodField()
    sampling = serializers.SerializerMethodField()

    class Meta:
        model = Queue
        fields = [
            "id",
            "name",
            "project",
            "instructions",
            "label_choices",
            "overlap",
            "lease_seconds",
            "show_segments",
            "consensus",
            "active",
            "gold_set",
            "gold_rate",
            "reviewers",
            "sampling",
            "created_at",
        ]

    def get_reviewers(self, queue: Queue) -> list[str]:
        return sorted(user.get_username() for user in queue.reviewers.all())

    def get_sampling(self, queue: Queue) -> dict:
        return {
            "source": queue.source,
            "filter": queue.filter,
            "strategy": queue.strategy,
            "size": queue.size,
            "rate": queue.rate,
            "strata": queue.strata,
            "allocation": queue.allocation,
            "min_per_stratum": queue.min_per_stratum,
            "seed": queue.seed,
            "schedule_minutes": queue.schedule_minutes,
        }


class QueueWriteSerializer(StrictSerializer):
    """What a client may send to create (POST) or change (PATCH) a queue."""

    name = serializers.CharField(max_length=200)
    project = serializers.SlugField(help_text="The project's slug (create only).")
    instructions = serializers.CharField(required=False, allow_blank=True)
    label_choices = serializers.ListField(
        child=serializers.CharField(max_length=200), required=False
    )
    overlap = serializers.IntegerField(min_value=1, max_value=20, required=False)
    lease_seconds = serializers.IntegerField(min_value=10, max_value=86400, required=False)
    show_segments = serializers.BooleanField(required=False)
    consensus = serializers.ChoiceField(Queue.Consensus.choices, required=False)
    active = serializers.BooleanField(required=False)
    gold_set = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        max_length=100,
        help_text="Slug of a gold set of the queue's project whose latest published version "
        "serves hidden gold checks; null turns them off.",
    )
    gold_rate = serializers.FloatField(
        required=False,
        min_value=0,
        max_value=0.5,
        help_text="Share of served items that are hidden gold checks, 0 to 0.5.",
    )
    reviewers = serializers.ListField(child=serializers.CharField(), required=False)
    sampling = SamplingSerializer(required=False)


class SamplingRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = SamplingRun
        fields = [
            "id",
            "queue",
            "status",
            "seed",
            "policy",
            "population",
            "sampled",
            "error",
            "trigger",
            "created_at",
            "started_at",
            "finished_at",
        ]


class LabelInSerializer(serializers.Serializer):
    """Documents the label payload; ``labeling.services.labels.clean_label`` checks it."""

    verdict = serializers.ChoiceField(Label.Verdict.choices)
    categories = serializers.ListField(child=serializers.CharField(), required=False)
    true_label = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    correction = CorrectionField(required=False)
    notes = serializers.CharField(required=False, allow_blank=True)
    seconds_spent = serializers.FloatField(required=False, allow_null=True, min_value=0)
    confirm_contradiction = serializers.BooleanField(
        required=False,
        default=False,
        help_text=(
            "A verdict that contradicts the true label (correct with a label other than the "
            "predicted one; incorrect with the predicted label) is refused with 400 "
            "`true_label` / `contradicts_verdict`; send true to store it anyway. Not stored."
        ),
    )


class LabelSerializer(serializers.ModelSerializer):
    reviewer = serializers.CharField(source="reviewer.username", read_only=True)
    correction = CorrectionField()

    class Meta:
        model = Label
        fields = [
            "id",
            "item",
            "reviewer",
            "verdict",
            "categories",
            "true_label",
            "correction",
            "notes",
            "seconds_spent",
            "created_at",
            "updated_at",
        ]


class ClaimSerializer(serializers.Serializer):
    item = serializers.IntegerField()
    queue = serializers.IntegerField()
    lease_expires_at = serializers.DateTimeField()
    instructions = serializers.CharField()
    prediction = AnyJSONField()
    feedback = serializers.ListField(child=AnyJSONField())
    label_choices = serializers.ListField(child=serializers.CharField())
    categories = serializers.ListField(child=serializers.CharField())


class ReviewerStatsSerializer(serializers.Serializer):
    """One reviewer's figures in a queue. Production labels only, but for the gold figures."""

    username = serializers.CharField()
    labels = serializers.IntegerField()
    median_seconds = serializers.FloatField(allow_null=True)
    agreement_with_consensus = serializers.FloatField(allow_null=True)
    gold_checks = serializers.IntegerField(help_text="Hidden gold checks answered.")
    gold_correct = serializers.IntegerField(help_text="Of those, answered as expected.")
    gold_accuracy = serializers.FloatField(
        allow_null=True, help_text="gold_correct / gold_checks; null before the first check."
    )


class QueueStatsSerializer(serializers.Serializer):
    queue = serializers.IntegerField()
    items = serializers.DictField(child=serializers.IntegerField())
    labels = serializers.IntegerField(help_text="Production labels (gold answers aside).")
    gold_checks = serializers.IntegerField(help_text="Hidden gold checks answered.")
    agreement = serializers.DictField(child=serializers.FloatField(allow_null=True))
    reviewers = ReviewerStatsSerializer(many=True)
