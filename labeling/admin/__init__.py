"""The labeling admin, one module per part: queues (with adjudication; the reviewer workspace's
pages in ``workspace.py`` are mounted under the queue admin), gold sets, exports, audits.
Importing a module registers its ModelAdmins. Who sees what is ``feedback.access``.
Imports go one way: ``queues`` uses ``gold`` (the promote action) and ``fields``; ``gold``
uses only ``fields``."""

from . import audits, exports, gold, queues  # noqa: F401
