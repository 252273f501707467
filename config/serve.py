"""The production web tier: nginx in front, gunicorn behind it (README, "Production").

    .venv/bin/python config/serve.py --listen 0.0.0.0:8000 --workers 4

writes ``<run-dir>/nginx.conf`` from ``config/nginx.conf.template`` (``--listen`` for clients,
``--app`` for gunicorn, reachable from nginx only), starts gunicorn (``config/gunicorn.py``) and,
once it answers, nginx in the foreground; stops both on SIGTERM or Ctrl-C, and stops the other
when one dies (exit status 1), so a supervisor (systemd, a container runtime) restarts the pair.
``--print-config`` prints the nginx configuration and exits, for an nginx you run yourself.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
TEMPLATE = BASE_DIR / "config" / "nginx.conf.template"


def worker_user() -> str:
    """nginx's worker user when started as root (its master drops to it); none otherwise."""
    if os.geteuid() != 0:
        return ""
    for name in ("www-data", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return f"user {name};"
    return ""


def render(args: argparse.Namespace) -> str:
    fields = {
        "listen": args.listen,
        "upstream": args.app,
        "run_dir": str(args.run_dir),
        "log_dir": str(args.log_dir),
        "static_root": str(args.static_root),
        "mime_types": args.mime_types,
        "user": worker_user(),
        "forwarded_proto": {"scheme": "$scheme", "header": "$http_x_forwarded_proto"}[
            args.forwarded_proto
        ],
    }
    text = TEMPLATE.read_text()
    for name, value in fields.items():
        text = text.replace("{{" + name + "}}", value)
    rest = text.replace("{{ }}", "")  # the comment that names the fields
    if "{{" in rest:
        raise SystemExit(f"unfilled field in {TEMPLATE}: {rest[rest.index('{{') :][:40]}")
    return text


def wait_for_port(address: str, process: subprocess.Popen, seconds: float) -> None:
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"gunicorn exited with status {process.returncode}")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"gunicorn did not listen on {address} within {seconds:.0f} s")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="0.0.0.0:8000", help="nginx: address:port for clients")
    parser.add_argument("--app", default="127.0.0.1:8001", help="gunicorn: address:port")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (8 threads each)")
    parser.add_argument("--run-dir", type=Path, default=BASE_DIR / "var" / "serve")
    parser.add_argument("--log-dir", type=Path, default=None, help="default: the run dir")
    parser.add_argument("--static-root", type=Path, default=None, help="default: STATIC_ROOT")
    parser.add_argument("--mime-types", default="/etc/nginx/mime.types")
    parser.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    parser.add_argument(
        "--forwarded-proto",
        choices=["scheme", "header"],
        default="scheme",
        help="X-Forwarded-Proto for Django: nginx's own scheme (TLS ends here or nowhere), or"
        " the header of a TLS-terminating load balancer in front (only it may reach nginx)",
    )
    parser.add_argument("--print-config", action="store_true")
    args = parser.parse_args(argv)
    args.run_dir = args.run_dir.resolve()
    args.log_dir = (args.log_dir or args.run_dir).resolve()
    if args.static_root is None:
        var_dir = Path(os.environ.get("REDRESS_VAR_DIR", BASE_DIR / "var"))
        args.static_root = var_dir / "static"  # settings.STATIC_ROOT, without loading Django
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = render(args)
    if args.print_config:
        print(config, end="")
        return 0
    args.run_dir.mkdir(parents=True, exist_ok=True)
    args.log_dir.mkdir(parents=True, exist_ok=True)
    conf = args.run_dir / "nginx.conf"
    conf.write_text(config)
    nginx = [args.nginx, "-p", str(args.run_dir), "-c", str(conf)]
    subprocess.run([*nginx, "-t", "-q"], check=True)

    stopping = False

    def stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    app = subprocess.Popen(
        [
            *(sys.executable, "-m", "gunicorn", "config.wsgi", "-c", "config/gunicorn.py"),
            *("--workers", str(args.workers), "--bind", args.app),
        ],
        cwd=BASE_DIR,
    )
    proxy = None
    status = 0
    try:
        wait_for_port(args.app, app, 60)
        proxy = subprocess.Popen([*nginx, "-g", "daemon off;"], cwd=BASE_DIR)
        print(f"serve: nginx on {args.listen} -> gunicorn on {args.app}", file=sys.stderr)
        while not stopping:
            if app.poll() is not None or proxy.poll() is not None:
                which = "gunicorn" if app.poll() is not None else "nginx"
                print(f"serve: {which} exited; stopping", file=sys.stderr)
                status = 1
                break
            time.sleep(0.2)
    finally:
        # nginx first (SIGQUIT: finish the requests in flight), then gunicorn (SIGTERM: the same).
        for process, signum in ((proxy, signal.SIGQUIT), (app, signal.SIGTERM)):
            if process is not None and process.poll() is None:
                process.send_signal(signum)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    return status


if __name__ == "__main__":
    sys.exit(main())
