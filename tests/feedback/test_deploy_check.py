"""``manage.py check --deploy`` is clean under the README's production settings (TLS at a proxy
that sets X-Forwarded-Proto, secure cookies, HSTS), run in a subprocess as an operator would."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The README's "Production" settings (keep the two in step).
PRODUCTION = {
    "DJANGO_DEBUG": "false",
    "DJANGO_ALLOWED_HOSTS": "redress.example.com",
    "DJANGO_SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO=https",
    "DJANGO_SECURE_SSL_REDIRECT": "true",
    "DJANGO_SECURE_COOKIES": "true",
    "DJANGO_SECURE_HSTS_SECONDS": "31536000",
    "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "DJANGO_SECURE_HSTS_PRELOAD": "true",
}


def check_deploy(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    base.pop("DJANGO_SETTINGS_MODULE", None)
    base.update(
        REDRESS_VAR_DIR=str(tmp_path),
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),  # as the README says to make one
        **env,
    )
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_the_production_settings(tmp_path):
    result = check_deploy(tmp_path, **PRODUCTION)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "System check identified no issues (0 silenced)."
    assert "WARNINGS" not in result.stderr


def test_without_them_check_deploy_names_each_missing_setting(tmp_path):
    bare = {k: v for k, v in PRODUCTION.items() if k in ("DJANGO_DEBUG", "DJANGO_ALLOWED_HOSTS")}

    result = check_deploy(tmp_path, **bare)

    assert result.returncode == 1
    for code in ("W004", "W008", "W012", "W016"):  # HSTS, SSL redirect, both cookies
        assert f"security.{code}" in result.stderr


def test_a_malformed_proxy_header_setting_is_refused(tmp_path):
    result = check_deploy(
        tmp_path, **{**PRODUCTION, "DJANGO_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto"}
    )

    assert result.returncode == 1
    assert "DJANGO_SECURE_PROXY_SSL_HEADER is HTTP_<HEADER>=<value>" in result.stderr
