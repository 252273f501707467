"""The dispute lifecycle service: open → in_review → upheld | rejected, recorded."""

from __future__ import annotations

import pytest

from feedback.errors import Conflict, InvalidInput
from feedback.models import DisputeEvent
from feedback.selectors import project_context
from feedback.services.disputes import dispute_resolve, dispute_transition
from feedback.services.intake import feedback_submit

pytestmark = pytest.mark.django_db


@pytest.fixture
def submit(project, prediction_factory):
    prediction_factory(project=project, external_id="p")

    def _submit(kind="dispute"):
        (result,) = feedback_submit(
            context=project_context(project=project),
            items=[
                {"prediction": "p", "kind": kind, **({"rating": 1} if kind == "rating" else {})}
            ],
        )
        return result.obj

    return _submit


def test_full_lifecycle_is_recorded_and_visible_to_the_app(submit, ingest_client, admin_user):
    dispute = submit()

    dispute_transition(dispute_id=dispute.pk, to_status="in_review")
    resolved = dispute_resolve(
        dispute_id=dispute.pk, upheld=True, note="Refund was due.", actor=admin_user
    )

    assert resolved.status == "upheld"
    assert resolved.resolved_by == admin_user
    assert list(DisputeEvent.objects.values_list("from_status", "to_status")) == [
        ("open", "in_review"),
        ("in_review", "upheld"),
    ]
    body = ingest_client.get(f"/api/v1/disputes/{dispute.pk}").json()
    assert body["status"] == "upheld"
    assert body["resolution_note"] == "Refund was due."
    assert body["resolved_at"] is not None


def test_an_admin_may_resolve_an_open_dispute_directly(submit):
    dispute = submit()

    assert (
        dispute_resolve(dispute_id=dispute.pk, upheld=False, note="Output was right.").status
        == "rejected"
    )


@pytest.mark.parametrize("to_status", ["open", "in_review", "upheld", "rejected"])
def test_a_resolved_dispute_is_final(submit, to_status):
    dispute = submit()
    dispute_resolve(dispute_id=dispute.pk, upheld=True, note="ok")

    with pytest.raises(Conflict) as refused:
        dispute_transition(dispute_id=dispute.pk, to_status=to_status, note="again")
    assert refused.value.errors[0].code == "illegal_transition"
    assert DisputeEvent.objects.count() == 1


def test_resolving_needs_a_note(submit):
    dispute = submit()

    with pytest.raises(InvalidInput):
        dispute_resolve(dispute_id=dispute.pk, upheld=True, note="  ")
    dispute.refresh_from_db()
    assert dispute.status == "open"


def test_only_disputes_have_a_lifecycle(submit):
    rating = submit(kind="rating")

    with pytest.raises(InvalidInput):
        dispute_resolve(dispute_id=rating.pk, upheld=True, note="n")
