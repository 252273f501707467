"""Celery application. Settings come from Django's, under the ``CELERY_`` namespace."""

import logging
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("redress")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


class _EmbeddedBrokerHostname(logging.Filter):
    """kombu warns "No hostname was supplied" whenever it connects to a broker URL without a
    host, and the embedded broker (``filesystem://``) has none by design: a warning on every
    command that sends a task, which newcomers read as an error. Only that message is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No hostname was supplied")


logging.getLogger("kombu.connection").addFilter(_EmbeddedBrokerHostname())
