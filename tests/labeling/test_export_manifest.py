"""The manifest's code version reads the commit from the git files, without a ``git`` process:
the same commit ``git rev-parse`` names, for a branch, packed refs, a detached HEAD and a
linked worktree."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from labeling.exports.manifest import git_commit

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "a.txt").write_text("a")
    git(root, "add", "a.txt")
    git(root, "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "-m", "a")
    return root


def test_a_branch_a_packed_ref_and_a_detached_head(repo):
    head = git(repo, "rev-parse", "HEAD")
    assert git_commit(repo) == head  # loose ref

    git(repo, "pack-refs", "--all")
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()
    assert git_commit(repo) == head  # packed-refs

    git(repo, "checkout", "-q", "--detach")
    assert git_commit(repo) == head  # HEAD holds the commit itself


def test_a_linked_worktree_and_no_repository(repo, tmp_path):
    (repo / "b.txt").write_text("b")
    git(repo, "add", "b.txt")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "-m", "b")
    linked = tmp_path / "linked"
    git(repo, "worktree", "add", "-q", "-b", "side", str(linked), "HEAD~1")

    assert (linked / ".git").is_file()
    assert git_commit(linked) == git(linked, "rev-parse", "HEAD") != git(repo, "rev-parse", "HEAD")
    assert git_commit(tmp_path / "nowhere") == ""
