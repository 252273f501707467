"""The labeling admin, one module per part: queues (with the reviewer workspace and
adjudication), gold sets, exports, audits. Importing a module registers its ModelAdmins."""

from . import audits, exports, gold, queues  # noqa: F401
