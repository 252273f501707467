"""The widget's files: found by staticfiles and copied by collectstatic (what nginx serves under
/static/ in production, config/serve.py), served at /static/redress/widget.js, small, and free
of what a strict Content-Security-Policy or an XSS review would refuse. Its behaviour is
tested in a browser: tests/e2e/test_widget.py."""

from __future__ import annotations

import gzip
import re

import pytest
from django.contrib.staticfiles import finders
from django.core.management import call_command

FILES = ("redress/widget.js", "redress/widget.css")


def source(name: str) -> str:
    path = finders.find(name)
    assert path, f"{name} is not found by the staticfiles finders"
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def test_collectstatic_copies_the_widget(settings, tmp_path):
    settings.STATIC_ROOT = tmp_path
    call_command("collectstatic", "--noinput", verbosity=0)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == source(name).encode()


@pytest.mark.parametrize("name", FILES)
def test_the_live_server_serves_the_widget(live_server, name):
    import urllib.request

    with urllib.request.urlopen(f"{live_server.url}/static/{name}", timeout=10) as res:
        assert res.status == 200
        assert res.read().decode() == source(name)


def test_small_when_gzipped():
    js = len(gzip.compress(source("redress/widget.js").encode(), 9))
    css = len(gzip.compress(source("redress/widget.css").encode(), 9))
    # The README states the sizes; keep them honest when the widget grows.
    assert js < 8 * 1024, js
    assert css < 2 * 1024, css


@pytest.mark.parametrize("name", FILES)
def test_ascii_only(name):
    # Served without a charset (nginx, Django's static view): a host page in another encoding
    # would garble non-ASCII text, so the files spell it with escapes.
    assert source(name).isascii()


def test_nothing_a_strict_csp_or_a_review_refuses():
    js = source("redress/widget.js")
    code = re.sub(r"/\*.*?\*/", "", js, flags=re.S)  # the header comment may name them
    for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                   "new Function", "setTimeout(\"", ".style.", "\"style\"", "cssText"):
        assert banned not in code, banned
    # Category names, dispute notes and server details go in as text.
    assert "textContent" in code
