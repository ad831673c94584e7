"""The git facts a history needs from the repository under test: which commit, its date and
subject, whether the tree is dirty, and a branch's first-parent commits."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from sbabench.errors import SbabenchError


@dataclass(frozen=True)
class Commit:
    """One commit of the repository under test."""

    sha: str
    """The full object name."""
    date: str
    """Committer date, ISO 8601 (what orders commits when items are pruned)."""
    subject: str
    """The first line of its message."""


def run_git(repo: Path, *args: str) -> str:
    """Standard output of `git -C repo args`; a user error naming the repository otherwise."""
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=60
        )
    except FileNotFoundError:
        raise SbabenchError(
            "git is not installed (or not on PATH)", fix="install git, or add it to PATH"
        ) from None
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["git failed"])[-1]
        raise SbabenchError(
            f"git {' '.join(args)} failed: {reason}",
            where=str(repo),
            fix="give --repo the git repository whose code is under test, and a commit or "
            "branch it holds",
        )
    return done.stdout


def resolve(repo: Path, ref: str) -> str:
    """The full commit name `ref` (a branch, tag or abbreviated name) stands for in `repo`."""
    if ref.startswith("-"):
        raise SbabenchError(f"{ref!r} is not a commit or branch name", fix="name a commit")
    return run_git(repo, "rev-parse", "--verify", "--end-of-options", f"{ref}^{{commit}}").strip()


def describe(repo: Path, ref: str = "HEAD") -> Commit:
    """The commit `ref` names, with its committer date and subject."""
    sha = resolve(repo, ref)
    date, _, subject = (
        run_git(repo, "log", "-1", "--format=%cI%x00%s", sha).rstrip("\n").partition("\0")
    )
    return Commit(sha, date, subject)


def is_dirty(repo: Path) -> bool:
    """Whether tracked files differ from HEAD (untracked files, such as results, do not count)."""
    return bool(run_git(repo, "status", "--porcelain", "--untracked-files=no").strip())


def first_parent(repo: Path, ref: str = "HEAD", limit: int = 500) -> list[Commit]:
    """The first-parent commits of `ref`, oldest first, at most `limit` (the newest)."""
    sha = resolve(repo, ref)
    out = run_git(
        repo, "log", "--first-parent", f"--max-count={limit}", "--format=%H%x00%cI%x00%s", sha
    )
    commits = [Commit(*line.split("\0", 2)) for line in out.splitlines() if line]
    return commits[::-1]


def worktree_root(repo: Path) -> Path:
    """The top folder of the work tree holding `repo`."""
    return Path(run_git(repo, "rev-parse", "--show-toplevel").strip())
