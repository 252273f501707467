"""A queue's configuration as sent: one declaration for the API (``POST /queues``, ``PATCH
/queues/{id}`` and their schema), the admin's queue form and ``seed_demo`` alike
(``queue_input``).

What needs the database, or the stored queue, stays with ``labeling.services.queues``: a name
taken in the project, reviewers who are members, a gold set of the project, and the sampling
policy as a whole (a change of one field is checked with the stored others:
``labeling.services.sampling.validate_policy``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from rest_framework import serializers

from feedback.api.inputs import StrictSerializer, validated
from feedback.api.serializers import SegmentField

from ..models import Queue
from ..services.sampling import FILTER_KEYS

GOLD_RATE_MAX = 0.5


class SamplingFilterSerializer(StrictSerializer):
    unknown_detail = f"Unknown filter; allowed: {', '.join(sorted(FILTER_KEYS))}."

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
        max_value=GOLD_RATE_MAX,
        help_text="Share of served items that are hidden gold checks, 0 to 0.5.",
    )
    notify_every = serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=10_000_000,
        help_text="Send labels.ready each time this many items completed since the last one; "
        "0: off.",
    )
    reviewers = serializers.ListField(child=serializers.CharField(), required=False)
    sampling = SamplingSerializer(required=False)

    def validate_label_choices(self, choices: list[str]) -> list[str]:
        duplicates = sorted(c for c, n in Counter(choices).items() if n > 1)
        if duplicates:
            raise serializers.ValidationError(
                f"Label choices must be distinct: {', '.join(duplicates)}.", code="duplicate"
            )
        return choices


def queue_input(data: Any, *, partial: bool = False) -> dict[str, Any]:
    """A queue's configuration as sent (the API's body, the admin form's, the demo's), as the
    queue services take it: the fields sent (``partial``: a change), date-times of the sampling
    filter back as ISO text (the policy is stored as JSON). ``InvalidInput`` naming each field."""
    data = dict(validated(QueueWriteSerializer, data, partial=partial))
    if "sampling" in data:
        sampling = dict(data["sampling"])
        if "filter" in sampling:
            spec = dict(sampling["filter"])
            for key in ("created_after", "created_before"):
                if key in spec:
                    spec[key] = spec[key].isoformat()
            sampling["filter"] = spec
        data["sampling"] = sampling
    return data
