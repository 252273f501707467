"""Taking a role away: ``membership_revoke`` drops the membership and the role's permission
group (unless the role is held in another project), through the service from the admin (the
delete page, "Delete selected", the project page's inline) and from ``manage.py revoke_member``."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.urls import reverse

from feedback.errors import NotFound
from feedback.models import Membership
from feedback.services.projects import (
    ROLE_GROUPS,
    membership_grant,
    membership_revoke,
    project_create,
)

from .test_admin import form_data

pytestmark = pytest.mark.django_db

DS_GROUP = ROLE_GROUPS[Membership.Role.DATA_SCIENTIST]
REVIEWER_GROUP = ROLE_GROUPS[Membership.Role.REVIEWER]


def groups_of(username: str) -> list[str]:
    user = get_user_model().objects.get(username=username)
    return sorted(user.groups.values_list("name", flat=True))


def test_revoke_drops_the_membership_the_group_and_staff():
    # given
    project = project_create(slug="p-one")
    membership_grant(project=project, username="dana", role=Membership.Role.DATA_SCIENTIST)
    assert groups_of("dana") == [DS_GROUP]

    # when
    role = membership_revoke(project=project, username="dana")

    # then
    assert role == Membership.Role.DATA_SCIENTIST
    assert not Membership.objects.filter(user__username="dana").exists()
    assert groups_of("dana") == []
    dana = get_user_model().objects.get(username="dana")
    assert dana.is_staff is False
    assert not dana.has_perm("feedback.view_feedback")


def test_revoke_keeps_the_groups_of_roles_held_elsewhere():
    one, two = project_create(slug="p-one"), project_create(slug="p-two")
    membership_grant(project=one, username="dana", role=Membership.Role.DATA_SCIENTIST)
    membership_grant(project=two, username="dana", role=Membership.Role.REVIEWER)
    assert groups_of("dana") == sorted([DS_GROUP, REVIEWER_GROUP])

    membership_revoke(project=one, username="dana")

    assert groups_of("dana") == [REVIEWER_GROUP]
    assert get_user_model().objects.get(username="dana").is_staff is True
    assert list(Membership.objects.values_list("project__slug", "role")) == [
        ("p-two", Membership.Role.REVIEWER)
    ]


def test_revoke_keeps_a_group_still_held_through_another_project():
    one, two = project_create(slug="p-one"), project_create(slug="p-two")
    membership_grant(project=one, username="dana", role=Membership.Role.DATA_SCIENTIST)
    membership_grant(project=two, username="dana", role=Membership.Role.DATA_SCIENTIST)

    membership_revoke(project=one, username="dana")

    assert groups_of("dana") == [DS_GROUP]


def test_revoking_a_non_member_is_a_clear_404():
    project = project_create(slug="p-one")
    get_user_model().objects.create(username="eve")
    with pytest.raises(NotFound) as caught:
        membership_revoke(project=project, username="eve")
    assert caught.value.status_code == 404
    assert [(e.field, e.code) for e in caught.value.errors] == [("username", "not_a_member")]


# --- the admin -------------------------------------------------------------------------------


def test_the_delete_page_revokes_through_the_service(admin_client):
    project = project_create(slug="p-one")
    membership = membership_grant(
        project=project, username="dana", role=Membership.Role.DATA_SCIENTIST
    )
    url = reverse("admin:feedback_membership_delete", args=[membership.pk])

    response = admin_client.post(url, {"post": "yes"})

    assert response.status_code == 302
    assert not Membership.objects.filter(pk=membership.pk).exists()
    assert groups_of("dana") == []


def test_delete_selected_revokes_each_through_the_service(admin_client):
    project = project_create(slug="p-one")
    other = project_create(slug="p-two")
    a = membership_grant(project=project, username="dana", role=Membership.Role.DATA_SCIENTIST)
    b = membership_grant(project=project, username="rex", role=Membership.Role.REVIEWER)
    membership_grant(project=other, username="rex", role=Membership.Role.ADMIN)

    response = admin_client.post(
        reverse("admin:feedback_membership_changelist"),
        {"action": "delete_selected", "_selected_action": [a.pk, b.pk], "post": "yes"},
    )

    assert response.status_code == 302
    assert list(Membership.objects.values_list("user__username", "project__slug")) == [
        ("rex", "p-two")
    ]
    assert groups_of("dana") == []
    assert groups_of("rex") == [ROLE_GROUPS[Membership.Role.ADMIN]]


def test_removing_a_member_on_the_project_page_revokes_through_the_service(admin_client):
    project = project_create(slug="p-one")
    membership = membership_grant(
        project=project, username="dana", role=Membership.Role.DATA_SCIENTIST
    )
    url = reverse("admin:feedback_project_change", args=[project.pk])
    page = admin_client.get(url)
    data = form_data(page)
    (index,) = [
        i
        for i, form in enumerate(page.context["inline_admin_formsets"][1].formset.forms)
        if form.instance.pk == membership.pk
    ]
    data[f"memberships-{index}-DELETE"] = "on"

    assert admin_client.post(url, data).status_code == 302

    assert not Membership.objects.filter(pk=membership.pk).exists()
    assert groups_of("dana") == []


def test_a_project_admin_cannot_revoke_in_a_project_they_only_review(client):
    mine, theirs = project_create(slug="p-mine"), project_create(slug="p-theirs")
    boss = membership_grant(
        project=mine, username="boss", role=Membership.Role.ADMIN, password="pw-123456"
    ).user
    membership_grant(project=theirs, username="boss", role=Membership.Role.REVIEWER)
    victim = membership_grant(project=theirs, username="vic", role=Membership.Role.DATA_SCIENTIST)
    assert client.login(username=boss.username, password="pw-123456")

    response = client.post(
        reverse("admin:feedback_membership_delete", args=[victim.pk]), {"post": "yes"}
    )

    # The membership list is scoped to the person's projects, but "theirs" is one of them:
    # the page exists and refuses (no delete_membership in a project they only review).
    assert response.status_code == 403
    assert Membership.objects.filter(pk=victim.pk).exists()
    assert groups_of("vic") == [DS_GROUP]


# --- the command -----------------------------------------------------------------------------


def test_revoke_member_command(capsys):
    project = project_create(slug="p-one")
    membership_grant(project=project, username="dana", role=Membership.Role.REVIEWER)

    call_command("revoke_member", "dana", "--project", "p-one")

    assert capsys.readouterr().out == "dana is no longer a reviewer in p-one\n"
    assert not Membership.objects.exists()
    assert groups_of("dana") == []


def test_revoke_member_command_refuses_clearly():
    project_create(slug="p-one")
    get_user_model().objects.create(username="eve")
    with pytest.raises(CommandError, match="username: 'eve' holds no role in 'p-one'"):
        call_command("revoke_member", "eve", "--project", "p-one")
    with pytest.raises(CommandError, match="No project 'nope'"):
        call_command("revoke_member", "eve", "--project", "nope")
