"""The fine-tuning stage: same budget per operator, cached checkpoints, divergence handling."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from sbabench.cli import main
from sbabench.runner import run_suite
from sbabench.suite import parse_suite

SUITE = """\
name: ft
models:
  - {name: moe, source: upcycle, experts: 4, layers: [1], router: random}
aggregators: [linear, sba]
tasks: [WordSim353]
train: {steps: 3, batch_size: 4, lr: 1.0e-3, max_length: 32}
settings: {device: cpu}
"""


def test_each_operator_trains_with_the_same_budget_and_checkpoints_are_reused(
    tmp_path: Path,
) -> None:
    suite = parse_suite(SUITE)
    first = run_suite(suite, tmp_path)
    assert first.exit_code == 0, first.failed
    logs = {r.aggregator: r.training for r in first.results}
    for log in logs.values():
        assert (
            log is not None
            and log["steps"] == 3
            and len(log["loss"]) == 3
            and len(log["grad_norm"]) == 3
        )
        assert log["trainable_parameters"] > 0 and set(log["router_load_cv"]) == {
            "encoder.layer.1.output.dense.combine"
        }
    assert logs["linear"]["trainable_parameters"] == logs["sba"]["trainable_parameters"]
    assert logs["linear"]["loss"] != logs["sba"]["loss"]  # the operator changes training
    plots = CliRunner().invoke(main, ["plot", str(tmp_path), "--output", str(tmp_path / "png")])
    assert plots.exit_code == 0 and (tmp_path / "png" / "training_moe.png").is_file(), plots.output

    untrained = run_suite(
        parse_suite(
            SUITE.replace("train: {steps: 3, batch_size: 4, lr: 1.0e-3, max_length: 32}\n", "")
        ),
        tmp_path / "u",
    )
    trained_scores = {r.aggregator: r.main_score for r in first.results}
    assert trained_scores != {r.aggregator: r.main_score for r in untrained.results}

    # Recomputing without the embedding cache reloads the cached checkpoints: same scores, no training.
    again = run_suite(
        parse_suite(SUITE.replace("device: cpu", "device: cpu, embedding_cache: 'off'")),
        tmp_path,
        force=True,
    )
    assert {r.aggregator: r.main_score for r in again.results} == trained_scores
    assert {r.aggregator: r.training for r in again.results} == logs


def test_divergence_stops_that_operator_only(tmp_path: Path) -> None:
    suite = parse_suite(
        SUITE.replace("[linear, sba]", "[linear, 'tests.user_ops:nan_on_real_batches']")
    )
    summary = run_suite(suite, tmp_path)
    assert summary.exit_code == 1
    assert list(summary.failed) == ["moe/tests.user_ops.nan_on_real_batches/WordSim353"]
    assert "training diverged" in next(iter(summary.failed.values()))
    assert [r.aggregator for r in summary.results] == ["linear"]
