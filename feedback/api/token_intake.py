"""``POST /api/v1/feedback`` from an end user's browser (``Authorization: FeedbackToken``).

The token names the prediction and the end user: the body may leave both out, and when it
names them they must be the token's (403 ``token_scope``: the body never overrides the token's
end user); its kind must be one the token allows. Then it is the one intake path
(``feedback_submit``, ``origin="token"``): the same validation, PII scrubbing and idempotency as
a key's, one rating per end user and prediction (changed in place: 200), one dispute (a second
is 409 naming the first). The answer leaves out the prediction's segment, which the browser
has no need of.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from ..errors import InvalidInput
from ..feedback_tokens import KINDS
from ..models import Feedback
from ..services.intake import feedback_submit
from .inputs import json_object
from .intake import KEY_HEADER, STATUS, Refused, feedback_representation, raise_for_single
from .token_grant import TokenGrant, out_of_scope

TOKEN = Feedback.Origin.TOKEN.value


def token_feedback_item(grant: TokenGrant, data: Any) -> dict[str, Any]:
    """The item to submit: the body with the token's prediction and end user, or 403."""
    item = json_object(data)
    claims = grant.claims
    prediction = item.get("prediction")
    if prediction is not None and prediction != claims.prediction:
        raise out_of_scope(
            "prediction",
            "This token is for another prediction: leave `prediction` out, or send the "
            "token's own.",
        )
    end_user = item.get("end_user")
    if end_user is not None and end_user != claims.end_user:
        raise out_of_scope(
            "end_user", "The end user is the token's: leave `end_user` out, or send the token's."
        )
    kind = item.get("kind")
    if type(kind) is str and kind in KINDS and kind not in claims.kinds:
        raise out_of_scope(
            "kind", f"This token does not allow {kind!r}; it allows {', '.join(claims.kinds)}."
        )
    return {**item, "prediction": claims.prediction, "end_user": claims.end_user}


def feedback_token_post(
    request: HttpRequest, grant: TokenGrant, data: Any, refused: Refused
) -> tuple[Any, int]:
    if refused:
        raise InvalidInput(refused)
    item = token_feedback_item(grant, data)
    (result,) = feedback_submit(
        context=grant.project.intake,
        items=[item],
        idempotency_keys=[request.META.get("HTTP_IDEMPOTENCY_KEY")],
        origin=TOKEN,
    )
    raise_for_single(result, KEY_HEADER)
    body = feedback_representation(result.obj)
    del body["segment"]
    return body, STATUS[result.outcome]
