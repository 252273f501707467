"""Site-level pages: the landing page at ``/`` and the admin's start page.

A person whose only role is reviewer has nothing to do on the admin index; they go straight to
their queues (the reviewer workspace), with open counts and a "Start labeling" button.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse

from feedback.models import Membership


def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")


def workspace_url() -> str | None:
    try:
        return reverse("admin:labeling_workspace_index")
    except NoReverseMatch:  # the workspace is mounted by the labeling admin
        return None


def landing(request: HttpRequest) -> HttpResponse:
    """What Redress is, and the ways in: the admin, the reviewer workspace, the API docs."""
    return render(request, "landing.html", {"workspace_url": workspace_url()})


def reviews_only(user: AbstractBaseUser) -> bool:
    """A member of some project whose every role is reviewer (not a superuser)."""
    if not user.is_authenticated or user.is_superuser:
        return False
    roles = set(Membership.objects.filter(user=user).values_list("role", flat=True))
    return roles == {Membership.Role.REVIEWER}


def admin_index(request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
    """The admin's index, except for reviewers, who are taken to their queues."""
    url = workspace_url()
    if url and reviews_only(request.user):
        return redirect(url)
    return admin.site.index(request, extra_context)
