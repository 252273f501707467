"""The project's URLconf plus ``/bench/bare``: Django with no DRF, no database, no cache.

The bare view is the denominator of the single-intake ratio: the same gunicorn, WSGI handler
and middleware stack, doing nothing.
"""

from __future__ import annotations

from django.http import HttpResponse
from django.urls import path

from config.urls import handler404, handler500
from config.urls import urlpatterns as project_urlpatterns

__all__ = ["handler404", "handler500", "urlpatterns"]


def bare(request):
    return HttpResponse(status=200)


urlpatterns = [path("bench/bare", bare, name="bench-bare"), *project_urlpatterns]
