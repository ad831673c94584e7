"""A git repository and result folders made up for history tests (no model runs)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from sbabench.analysis.evidence import recomputed_score
from sbabench.run.results import UnitResult, result_path, save_result
from sbabench.tasks.items import ItemScores
from tests import factories

ITEMS = 200


def git(repo: Path, *args: str, date: int = 1_700_000_000) -> str:
    """Run git in `repo` (a test's own identity and dates, no user config)."""
    env = {
        "GIT_AUTHOR_DATE": f"@{date} +0000", "GIT_COMMITTER_DATE": f"@{date} +0000",
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1", "PATH": "/usr/bin:/bin",
    }  # fmt: skip
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=True)  # fmt: skip
    return done.stdout.strip()


def new_repo(repo: Path) -> Path:
    """An empty repository on branch main, results folders ignored."""
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / ".gitignore").write_text("results/\n")
    return repo


def commit(repo: Path, message: str, date: int) -> str:
    """Commit every change (at a fixed, increasing date); the new commit's name."""
    (repo / "log.txt").write_text(message + "\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message, date=date)
    return git(repo, "rev-parse", "HEAD")


def sts_result(shift: float, seed: int, *, aggregator: str = "sba", task: str = "T1") -> UnitResult:
    """An STS unit whose predictions are gold plus noise; `shift` more noise lowers its
    Spearman (the same gold and base noise for every seed's items)."""
    base = np.random.default_rng(1234)
    gold = base.uniform(0, 5, ITEMS)
    noise = base.normal(0, 1.5, ITEMS)
    extra = np.random.default_rng(seed).normal(0, 1, ITEMS)
    predicted = gold + noise + shift * extra
    items = {"default": ItemScores(kind="sts", gold=gold.tolist(), predicted=predicted.tolist())}
    result = factories.result(aggregator, items, 0.0, task=task)
    score = recomputed_score(result)
    assert score is not None
    return result.model_copy(update={"main_score": score})


def write_results(root: Path, *results: UnitResult) -> Path:
    """Results under `root/<suite>/...`; returns the suite folder."""
    for result in results:
        save_result(
            result_path(root, result.suite, result.model, result.aggregator, result.task), result
        )
    return root / results[0].suite
