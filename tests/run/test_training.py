"""The fine-tuning stage: same budget per operator, cached checkpoints, divergence handling."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from sbabench.cli import main
from sbabench.models.encoder import build_encoder
from sbabench.run.execute import run_suite
from sbabench.suite import Suite, parse_suite

SUITE = """\
name: ft
models:
  - {name: moe, source: upcycle, experts: 4, layers: [1], router: random}
aggregators: [linear, sba]
tasks: [WordSim353]
train: {steps: 3, batch_size: 4, lr: 1.0e-3, max_length: 32}
settings: {device: cpu}
"""
TRAIN = "train: {steps: 3, batch_size: 4, lr: 1.0e-3, max_length: 32}\n"


def _assert_trained_moe_only(checkpoints: Path, suite: Suite) -> None:
    """Each checkpoint holds exactly the MoE block's parameters, every one moved from its start."""
    initial = build_encoder(suite.models[0], device="cpu")
    start = dict(initial.model.named_parameters())
    block = "encoder.layer.1.output.dense."
    files = sorted(checkpoints.glob("*.pt"))
    assert len(files) == 2  # one per operator
    for file in files:
        state = torch.load(file, weights_only=True)
        assert state and all(name.startswith(block) for name in state)
        assert {n for n in start if n.startswith(block)} == set(state)
        for name, value in state.items():
            assert not torch.equal(value, start[name].detach()), f"{name} did not train"


def test_each_operator_trains_with_the_same_budget_and_checkpoints_are_reused(
    tmp_path: Path,
) -> None:
    suite = parse_suite(SUITE)
    first = run_suite(suite, tmp_path)
    assert first.exit_code == 0, first.failed
    logs = {r.aggregator: r.training for r in first.results}
    for log in logs.values():
        assert log is not None and log.steps == 3
        assert len(log.loss) == 3 and len(log.grad_norm) == 3
        assert all(math.isfinite(v) for v in log.loss + log.grad_norm)
        assert log.trainable_parameters > 0
        assert set(log.router_load_cv) == {"encoder.layer.1.output.dense.combine"}
    linear, sba = logs["linear"], logs["sba"]
    assert linear is not None and sba is not None
    assert linear.trainable_parameters == sba.trainable_parameters
    # Same data, same order, same dropout masks, same starting weights: the first step sees the
    # same batch through the same model, so only the operator separates the curves.
    assert linear.loss != sba.loss
    _assert_trained_moe_only(tmp_path / ".cache" / "checkpoints", suite)
    plots = CliRunner().invoke(main, ["plot", str(tmp_path), "--output", str(tmp_path / "png")])
    assert plots.exit_code == 0 and (tmp_path / "png" / "training_moe.png").is_file(), plots.output

    # Training is deterministic: a fresh folder reproduces every curve and score exactly.
    fresh = run_suite(suite, tmp_path / "fresh")
    curves = {a: (log.loss, log.grad_norm) for a, log in logs.items() if log is not None}
    assert {
        r.aggregator: (r.training.loss, r.training.grad_norm) for r in fresh.results if r.training
    } == curves
    trained_scores = {r.aggregator: r.main_score for r in first.results}
    assert {r.aggregator: r.main_score for r in fresh.results} == trained_scores

    # The trained weights are what is scored: without the train block every score changes.
    untrained = run_suite(parse_suite(SUITE.replace(TRAIN, "")), tmp_path / "u")
    untrained_scores = {r.aggregator: r.main_score for r in untrained.results}
    assert all(untrained_scores[a] != trained_scores[a] for a in trained_scores)

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
    message = next(iter(summary.failed.values()))
    # the operator turned finite expert outputs into NaN: it is named, not "training diverged"
    assert "'tests.user_ops:nan_on_real_batches' returned NaN or inf" in message
    assert "encoder.layer.1.output.dense.combine" in message
    assert [r.aggregator for r in summary.results] == ["linear"]


def test_loss_free_biases_move_go_into_the_checkpoint_and_load_back(tmp_path: Path) -> None:
    from sbabench.run import training

    balanced = "router: random, train: {router: loss-free, bias_rate: 0.05}}"
    suite = parse_suite(SUITE.replace("router: random}", balanced).replace(", sba]", "]"))
    outcome = run_suite(suite, tmp_path)
    assert outcome.exit_code == 0, outcome.failed
    (result,) = outcome.results
    assert result.training is not None and result.training.steps == 3
    (file,) = (tmp_path / ".cache" / "checkpoints").glob("*.pt")
    state = torch.load(file, weights_only=True)
    bias = state["encoder.layer.1.output.dense.balance.bias"]
    assert "encoder.layer.1.output.dense.router.weight" in state  # the router still learns
    steps = bias / 0.05  # three steps of +-0.05 (or 0) each
    assert bias.abs().max() > 0 and torch.allclose(steps, steps.round(), atol=1e-5)
    assert steps.abs().max() <= 3
    encoder = build_encoder(suite.models[0], device="cpu")
    spec = suite.train_for(suite.models[0])
    assert spec is not None
    training.prepare_routers(encoder, spec)
    assert training.load_checkpoint(file.parent, file.stem, encoder) is not None
    loaded = encoder.model.get_buffer("encoder.layer.1.output.dense.balance.bias")
    assert torch.equal(loaded, bias)


ELIMINATION = """\
name: te
models:
  - {name: dense, source: dense}
  - {name: dense-r0.3, source: dense, token_elimination: {tilt_rate: 0.3, start_layer: 1}}
  - {name: pruned, source: dense, train: {token_elimination: {tilt_rate: 0.5, start_layer: 1}}}
tasks: [WordSim353]
train: {steps: 2, batch_size: 4, lr: 1.0e-3, max_length: 32, trainable: all}
settings: {device: cpu}
"""


def test_training_eliminates_tokens_only_as_the_train_stage_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`train.token_elimination` prunes while training; a model's own `token_elimination` is
    applied at evaluation only, so a model evaluated at two Tilt-Rates is trained once."""
    from sbabench.models import token_elimination

    calls: list[float] = []
    original = token_elimination.eliminating_forward

    def counted(model: Any, features: Any, schedule: Any, *rest: Any) -> Any:
        calls.append(schedule.tilt_rate)
        return original(model, features, schedule, *rest)

    monkeypatch.setattr(token_elimination, "eliminating_forward", counted)
    summary = run_suite(parse_suite(ELIMINATION), tmp_path)
    assert summary.exit_code == 0, summary.failed
    by_model = {r.model: r for r in summary.results}
    logs = {name: r.training for name, r in by_model.items()}
    assert all(log is not None and log.steps == 2 for log in logs.values())
    # dense and dense-r0.3 share one trained model (trained without elimination)
    assert len(list((tmp_path / ".cache" / "checkpoints").glob("*.pt"))) == 2
    assert logs["dense"] == logs["dense-r0.3"]
    assert logs["pruned"] is not None and logs["dense"] is not None
    assert logs["pruned"].loss != logs["dense"].loss
    # 2 steps x 2 sides pruned at 0.5 while training; evaluation pruned at 0.3 only
    assert calls.count(0.5) == 4 and 0.3 in calls
    assert by_model["dense-r0.3"].main_score != by_model["dense"].main_score
    assert by_model["dense-r0.3"].token_elimination is not None
    assert by_model["pruned"].token_elimination is None  # evaluated unpruned


def test_train_token_elimination_is_refused_where_it_cannot_apply() -> None:
    from sbabench.errors import SbabenchError

    with pytest.raises(SbabenchError, match=r"tilt_rate .* must be in \[0, 1\)"):
        parse_suite(ELIMINATION.replace("tilt_rate: 0.5", "tilt_rate: 1.5"))


def test_the_training_log_does_not_depend_on_the_models_own_token_elimination() -> None:
    """The log is cached under the checkpoint key, which leaves the model's own
    `token_elimination` out: nothing in it (the router load measured after training included)
    may depend on it, or a model evaluated at R = 0.4 reports what R = 0.2 measured."""
    from sbabench.models import token_elimination
    from sbabench.run import training

    suite = parse_suite(SUITE.replace(", sba]", "]"))
    spec = suite.train_for(suite.models[0])
    assert spec is not None
    encoder = build_encoder(suite.models[0], device="cpu")
    start = {k: v.detach().clone() for k, v in encoder.model.state_dict().items()}
    plain = training.train(encoder, spec)
    encoder.model.load_state_dict(start)
    encoder.elimination = token_elimination.prepare(encoder.model, 0.5, 0)
    pruned = training.train(encoder, spec)
    assert encoder.elimination is not None and encoder.elimination.tilt_rate == 0.5  # put back
    assert pruned.loss == plain.loss and pruned.router_load_cv == plain.router_load_cv


def test_training_with_elimination_leaves_the_plain_forward_as_it_was() -> None:
    """A model trained with `train.token_elimination` but evaluated without elimination is
    evaluated with its own plain forward, whether it trained in this run or loaded its
    checkpoint from the cache."""
    from sbabench.run import training

    suite = parse_suite(ELIMINATION)
    pruned = suite.models[2]
    spec = suite.train_for(pruned)
    assert spec is not None and spec.token_elimination is not None
    encoder = build_encoder(pruned, device="cpu")
    texts = ["a cat", "markets fell sharply on monday after the report", "hello world again"]
    before = encoder.encode(texts)
    with training._training_elimination(encoder, spec):
        assert encoder.elimination is not None
    assert encoder.elimination is None
    assert (encoder.encode(texts) == before).all()


@pytest.mark.parametrize(
    ("where", "line", "field"),
    [
        ("suite", ":7:", "train.token_elimination.start_layer"),
        ("model", ":5:", "models[2].train.token_elimination.start_layer"),
    ],
)
def test_a_train_start_layer_beyond_the_model_is_refused_before_running(
    tmp_path: Path, where: str, line: str, field: str
) -> None:
    """Located by `validate` (exit 2), not found by the train stage of every unit (exit 1)."""
    text = ELIMINATION.replace("tilt_rate: 0.5, start_layer: 1", "tilt_rate: 0.5, start_layer: 6")
    if where == "suite":
        text = ELIMINATION.replace(
            "trainable: all}",
            "trainable: all, token_elimination: {start_layer: 8, tilt_rate: 0.1}}",
        )
    suite = tmp_path / "bad.yaml"
    suite.write_text(text)
    result = CliRunner().invoke(main, ["validate", str(suite)])
    assert result.exit_code == 2, result.output
    assert f"bad.yaml{line}" in result.output and field in result.output
    assert "has 6 layers" in result.output and "from 0 to 5" in result.output
    assert result.output.count("start_layer is") == 1  # the suite's block once, not per model
    assert "Traceback" not in result.output


class _Planted:
    """A pickle that would create a file when unpickled (what weights_only refuses)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def test_a_planted_checkpoint_runs_no_code_and_is_trained_again(tmp_path: Path) -> None:
    from sbabench.run import training

    folder, sentinel = tmp_path / "checkpoints", tmp_path / "ran"
    folder.mkdir()
    torch.save({"x": _Planted(sentinel)}, folder / "k.pt")
    (folder / "k.json").write_text(
        training.TrainingRecord(trainable_parameters=1).model_dump_json()
    )
    suite = parse_suite(SUITE.replace(", sba]", "]"))
    encoder = build_encoder(suite.models[0], device="cpu")
    assert training.load_checkpoint(folder, "k", encoder) is None
    assert not sentinel.exists()
