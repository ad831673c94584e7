"""Points of a series: replicates combined, and paired by replicate between two commits."""

from __future__ import annotations

from pathlib import Path

import pytest

from sbabench.analysis.history.git import Commit
from sbabench.analysis.history.recording import to_record
from sbabench.analysis.history.series import build_series, paired_test
from sbabench.analysis.history.store import HistoryStore
from tests.analysis.history.builders import sts_result


def _replicated(shift: float, replicate: int):  # type: ignore[no-untyped-def]
    result = sts_result(shift, 10 + replicate)
    parts = result.key_parts.model_copy(update={"replicate": replicate})
    return result.model_copy(update={"replicate": replicate, "key_parts": parts, "key": parts.digest})  # fmt: skip


def test_replicates_make_one_point_and_pair_by_replicate(tmp_path: Path) -> None:
    line = [Commit("a" * 40, "2024-01-01T00:00:00+00:00", "a"), Commit("b" * 40, "2024-01-02T00:00:00+00:00", "b")]  # fmt: skip
    store = HistoryStore(tmp_path / "h.sqlite", create=True)
    records = [
        to_record(_replicated(shift, r), commit.sha, "ci", False)
        for commit, shift in zip(line, (0.5, 2.0), strict=True)
        for r in range(3)
    ]
    store.add(records, [(c.sha, c.date, c.subject) for c in line])
    (unit,) = build_series(store.records("ci"), line)
    before, after = unit.points
    scores = [r.score for r in before.records]
    between = (sum((s - sum(scores) / 3) ** 2 for s in scores) / 2) / 3
    item = sum(r.item_var for r in before.records) / 3
    assert len(before.records) == 3 and before.var == pytest.approx(between + item)
    test = paired_test(store, before, after, n_resamples=300)
    assert not isinstance(test, str)
    assert test.delta == pytest.approx(after.score - before.score, abs=1e-9)
    assert test.spread.replicate_var > 0 and test.spread.replicate_df == 2  # two-level, R = 3
    assert test.delta < 0 and test.p_value < 0.05
