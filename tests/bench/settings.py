"""Settings for ``make bench``: production settings plus a URLconf with a bare view.

Imported by the gunicorn workers the bench starts (``DJANGO_SETTINGS_MODULE=tests.bench.settings``)
and by ``run.py`` itself. Everything else is ``config.settings`` as production runs it (DEBUG
off, PostgreSQL, Redis cache); only the rate limit is lifted so the throttle counts every
request (one Redis round trip, as in production) but never refuses one.
"""

from __future__ import annotations

import os

# config.settings reads these at import time; with DEBUG off it requires the other two.
os.environ.setdefault("DJANGO_DEBUG", "false")
os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret-key-not-for-production")
os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost")
os.environ.setdefault("REDRESS_INGEST_RATE", "100000000/minute")
os.environ.setdefault("REDRESS_FEEDBACK_TOKEN_RATE", "100000000/minute")
os.environ.setdefault("REDRESS_FEEDBACK_END_USER_RATE", "100000000/minute")

from config.settings import *  # noqa: F403

DEBUG = False
ROOT_URLCONF = "tests.bench.urls"
REDRESS_INGEST_RATE = os.environ["REDRESS_INGEST_RATE"]
REDRESS_FEEDBACK_TOKEN_RATE = os.environ["REDRESS_FEEDBACK_TOKEN_RATE"]
REDRESS_FEEDBACK_END_USER_RATE = os.environ["REDRESS_FEEDBACK_END_USER_RATE"]
