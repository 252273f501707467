"""gunicorn settings of the web tier: ``gunicorn -c config/gunicorn.py config.wsgi``.

Flags on the command line override these. The bench (tests/bench/run.py) uses this file too.
"""

from __future__ import annotations

import os
import sys

worker_class = "gthread"
threads = 8

# How long a Python thread may keep the GIL while another waits for it (CPython's default is
# 5 ms). A gthread worker's threads spend their time between short Python steps and waits on
# PostgreSQL, Redis and the client: at 5 ms the GIL changes hands by force far more often than
# a request needs, and each handover costs both threads a wake-up (measured in
# docs/performance.md). A CPU-bound request still
# hands over at least every interval, so this bounds what one can add to another's latency.
GIL_SWITCH_INTERVAL = float(os.environ.get("REDRESS_GIL_SWITCH_INTERVAL", "0.05"))


def post_fork(server, worker) -> None:  # gunicorn calls it with both
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
