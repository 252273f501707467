"""Personal API tokens are stored hashed (sha256 + prefix), as project keys are: made and shown
once by ``manage.py drf_create_token`` (DRF's output format), checked by
``feedback.api.token_auth.PersonalTokenAuthentication``, listed in the admin by prefix only,
and the clear tokens of an older database hashed by migration feedback 0005."""

from __future__ import annotations

import hashlib
import importlib
import io
import re

import pytest
from django.apps import apps as global_apps
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse

from feedback.models import PersonalToken
from tests.conftest import client_for

pytestmark = pytest.mark.django_db

OUTPUT = re.compile(r"^Generated token ([0-9a-f]{40}) for user (\S+)\n$")


def drf_create_token(*args: str) -> str:
    out = io.StringIO()
    call_command("drf_create_token", *args, stdout=out)
    return out.getvalue()


def categories(token: str, project):
    return client_for(token=token).get(f"/api/v1/categories?project={project.slug}")


@pytest.fixture
def bob(project):
    from feedback.services.projects import membership_grant

    return membership_grant(project=project, username="bob", role="data_scientist").user


def test_the_token_is_printed_once_in_drfs_format_and_only_its_hash_is_kept(bob, project):
    output = drf_create_token("bob")

    match = OUTPUT.match(output)
    assert match, output
    token = match.group(1)
    assert output.split()[2] == token  # what the README's awk '{print $3}' takes
    stored = PersonalToken.objects.get(user=bob)
    assert stored.key_hash == hashlib.sha256(token.encode()).hexdigest()
    assert stored.prefix == token[:8]
    row = PersonalToken.objects.filter(pk=stored.pk).values().get()
    assert not any(token in str(value) for value in row.values())
    assert "authtoken_token" not in connection.introspection.table_names()
    assert categories(token, project).status_code == 200


def test_a_second_token_needs_r_and_r_replaces_the_first(bob, project):
    first = OUTPUT.match(drf_create_token("bob")).group(1)

    with pytest.raises(CommandError, match=r"bob already has a token \(" + first[:8] + r"….*-r"):
        drf_create_token("bob")
    assert categories(first, project).status_code == 200

    second = OUTPUT.match(drf_create_token("bob", "-r")).group(1)

    assert second != first
    assert categories(second, project).status_code == 200
    refused = categories(first, project)
    assert refused.status_code == 401
    assert refused.json()["errors"][0]["detail"] == "Unknown token, or its user is inactive."
    assert PersonalToken.objects.filter(user=bob).count() == 1


def test_unknown_user_and_bad_headers(bob, project):
    with pytest.raises(CommandError, match="user nobody does not exist"):
        drf_create_token("nobody")
    token = OUTPUT.match(drf_create_token("bob")).group(1)

    client = client_for()
    path = f"/api/v1/categories?project={project.slug}"
    for header in ("Token", "Token ", f"Token {token} extra", f"Token {token[:-1]}x"):
        response = client.get(path, HTTP_AUTHORIZATION=header)
        assert response.status_code == 401, header
        assert set(response.json()["errors"][0]) == {"field", "code", "detail"}

    bob.is_active = False
    bob.save()
    assert categories(token, project).status_code == 401


def test_the_admin_shows_the_prefix_only(admin_client, bob):
    token = OUTPUT.match(drf_create_token("bob")).group(1)
    stored = PersonalToken.objects.get(user=bob)

    listing = admin_client.get(reverse("admin:feedback_personaltoken_changelist"))
    page = admin_client.get(reverse("admin:feedback_personaltoken_change", args=[stored.pk]))

    for response in (listing, page):
        assert response.status_code == 200
        body = response.content.decode()
        assert f"{token[:8]}…" in body
        assert token not in body and stored.key_hash not in body
    assert admin_client.get(reverse("admin:feedback_personaltoken_add")).status_code == 403


def test_staff_who_are_not_superusers_do_not_see_tokens(client, bob):
    bob.set_password("pw-123456")
    bob.save()
    assert client.login(username="bob", password="pw-123456")

    response = client.get(reverse("admin:feedback_personaltoken_changelist"))

    assert response.status_code == 403


def test_the_migration_hashes_clear_tokens_and_empties_their_table(project, bob):
    # given: DRF authtoken's table of an older database, holding a clear token
    clear = "0123456789abcdef0123456789abcdef01234567"
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, "
            "created timestamp with time zone NOT NULL, user_id integer NOT NULL)"
        )
        cursor.execute(
            "INSERT INTO authtoken_token (key, created, user_id) VALUES "
            "(%s, '2026-01-02 03:04:05+00', %s)",
            [clear, bob.pk],
        )
    migration = importlib.import_module("feedback.migrations.0005_personal_tokens_hashed")

    class Editor:
        pass

    editor = Editor()
    editor.connection = connection

    # when
    migration.hash_clear_tokens(global_apps, editor)

    # then: the same token works, kept as a hash only; the clear row is gone
    stored = PersonalToken.objects.get(user=bob)
    assert stored.key_hash == hashlib.sha256(clear.encode()).hexdigest()
    assert (stored.prefix, stored.created_at.year) == ("01234567", 2026)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM authtoken_token")
        assert cursor.fetchone()[0] == 0
    assert categories(clear, project).status_code == 200

    # and the reverse drops the hashed tokens (the clear ones cannot come back)
    migration.drop_hashed_tokens(global_apps, editor)
    assert not PersonalToken.objects.exists()
    assert get_user_model().objects.filter(pk=bob.pk).exists()


def test_the_schema_documents_the_token_scheme(client):
    document = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()

    scheme = document["components"]["securitySchemes"]["tokenAuth"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "Authorization")
