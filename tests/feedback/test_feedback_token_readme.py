"""The README's minting code, run exactly as written, mints tokens Redress accepts."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from feedback.models import Feedback
from feedback.pii import pseudonymise
from feedback.services.feedback_tokens import token_secret_rotate

README = Path(__file__).resolve().parents[2] / "README.md"
pytestmark = pytest.mark.django_db


def block(language: str, first_line: str) -> str:
    """The README's ``language`` block whose first line is ``first_line``."""
    found = [
        body
        for body in re.findall(
            rf"^```{language}\n(.*?)^```[ \t]*$", README.read_text(), flags=re.M | re.S
        )
        if body.splitlines()[0] == first_line
    ]
    assert len(found) == 1, f"no single {language} block starting {first_line!r}"
    return found[0]


@pytest.fixture
def setup(project, prediction_factory):
    prediction_factory(project=project, external_id="answer-1")
    return project, token_secret_rotate(project=project)


def accepted(token: str, project) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"FeedbackToken {token}")
    response = client.post(
        "/api/v1/feedback", {"kind": "rating", "rating": -1}, format="json"
    )
    assert response.status_code == 201, response.content
    row = Feedback.objects.get(pk=response.json()["id"])
    assert row.end_user == pseudonymise(project.secret, "user-42")
    assert row.origin == "token"


def test_the_python_block_is_short_and_its_tokens_are_accepted(setup):
    project, secret = setup
    code = block("python", "# mint_feedback_token.py")
    assert len([line for line in code.splitlines() if line.strip()]) <= 12
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # our own README, as written

    accepted(namespace["mint"](secret, project.slug, "answer-1", "user-42"), project)
    limited = namespace["mint"](secret, project.slug, "answer-1", "user-42", kinds=["report"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"FeedbackToken {limited}")
    assert client.post("/api/v1/feedback", {"kind": "dispute"}, format="json").status_code == 403


def test_the_javascript_block_runs_in_node_and_its_tokens_are_accepted(setup, tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (apt-get install nodejs)")
    project, secret = setup
    code = block("js", "// mintFeedbackToken.js")
    assert len([line for line in code.splitlines() if line.strip()]) <= 12
    script = tmp_path / "mint.js"
    script.write_text(
        code + "\nconsole.log(mint(process.argv[2], process.argv[3], 'answer-1', 'user-42'));\n"
    )

    token = subprocess.run(
        [node, str(script), secret, project.slug], capture_output=True, text=True, check=True,
        timeout=30,
    ).stdout.strip()

    accepted(token, project)
