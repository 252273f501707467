"""Who may call what, as DRF permission classes: each names the ``Access`` it needs
(``feedback/api/caller.py`` holds the rules: API-key scopes for apps, roles for people)."""

from __future__ import annotations

from .caller import DATA, INGEST, MEMBER, Needs

HasIngestScope = Needs.of(INGEST)
# A key with the 'data' scope, or a logged-in person (then limited to their projects).
ReadsProjectData = Needs.of(DATA)
# Any project API key, or a logged-in person.
AnyProjectCaller = Needs.of(MEMBER)
