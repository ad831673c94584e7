"""The online K-means router, router slots of each family, and the load-balancing loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from sbabench.cli import main
from sbabench.moe import attach_moe
from sbabench.moe.routers import (
    OnlineKMeansRouter,
    OnlineKMeansTopKRouter,
    load_balancing_loss,
    make_online,
    router_slot,
    token_mask,
)
from sbabench.moe.upcycle import CentroidRouter
from tests.moe.test_families import FAMILIES, _build


def _clusters(seed: int, n: int = 400) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens around four orthogonal directions in R^8 (labels: which one)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=gen)
    centers = torch.eye(8)[:4] * 3.0
    return centers[labels] + 0.3 * torch.randn(n, 8, generator=gen), labels


def _load_cv(index: torch.Tensor, experts: int) -> float:
    counts = torch.bincount(index.reshape(-1), minlength=experts).float()
    return float(counts.std(unbiased=False) / counts.mean())


def _crowded_centroids() -> torch.Tensor:
    """Four centroids that all start near the first cluster: a badly placed fixed router."""
    gen = torch.Generator().manual_seed(7)
    return torch.eye(8)[0] + 0.3 * torch.randn(4, 8, generator=gen)


def test_one_update_moves_each_centroid_by_the_running_mean_rule() -> None:
    start = torch.randn(3, 5)
    router = OnlineKMeansRouter(start, temperature=0.1, top_k=1, decay=0.9).train()
    x = torch.randn(12, 5)
    index = router.probabilities(x).argmax(-1, keepdim=True)
    router(x)
    units = F.normalize(x, dim=-1)
    for e in range(3):
        routed = units[index[:, 0] == e]
        expected = start[e] if len(routed) == 0 else 0.9 * start[e] + 0.1 * routed.mean(0)
        assert torch.allclose(router.rows[e], expected, atol=1e-6)


def test_padding_does_not_move_the_centroids() -> None:
    router = OnlineKMeansRouter(torch.randn(2, 4), 0.1, top_k=1, decay=0.5).train()
    model = torch.nn.Sequential(router)
    before = router.rows.clone()
    with token_mask(model, torch.zeros(6, dtype=torch.bool)):
        model(torch.randn(6, 4))
    assert torch.equal(router.rows, before)
    assert router.token_mask is None  # told only for the batch


def test_centroids_do_not_move_outside_training() -> None:
    router = OnlineKMeansRouter(torch.randn(2, 4), 0.1, top_k=1).eval()
    before = router.rows.clone()
    router(torch.randn(6, 4))
    assert torch.equal(router.rows, before)


def test_online_router_finds_the_clusters_and_balances_load_better_than_fixed() -> None:
    start = _crowded_centroids()
    fixed = CentroidRouter(start.clone(), temperature=0.1)
    online = OnlineKMeansRouter(start, temperature=0.1, top_k=1, decay=0.9).train()
    for step in range(60):
        online(_clusters(seed=step, n=128)[0])
    online.eval()
    test, _ = _clusters(seed=1000)
    fixed_index = fixed(test).argmax(-1)
    online_index = online(test).argmax(-1)
    assert _load_cv(online_index, 4) < 0.5 * _load_cv(fixed_index, 4)
    # every centroid ends near the mean direction of the tokens it receives
    units = F.normalize(test, dim=-1)
    for e in online_index.unique().tolist():
        mean = units[online_index == e].mean(0)
        assert F.cosine_similarity(online.rows[e], mean, dim=0) > 0.95
    assert list(online.parameters()) == []  # nothing for an optimiser to train


def test_load_balancing_loss_is_one_when_balanced_and_hand_computed_otherwise() -> None:
    uniform = torch.full((8, 4), 0.25)
    uniform[:, 0] += 1e-3  # ties broken toward expert 0...
    uniform[torch.arange(8), torch.arange(8) % 4] += 2e-3  # ...then one expert per token
    assert float(load_balancing_loss([uniform], [1])) == pytest.approx(1.0, abs=1e-2)
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1]], requires_grad=True)
    loss = load_balancing_loss([probs], [1])  # both tokens to expert 0: f = (1, 0, 0)
    assert float(loss.detach()) == pytest.approx(3 * 0.65)
    loss.backward()
    assert probs.grad is not None and probs.grad[:, 0].abs().sum() > 0


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"])
def test_transformers_routers_become_online_from_their_weight_rows(family: str) -> None:
    assert family in FAMILIES
    model = _build(family)
    layers = attach_moe(model)
    slot = router_slot(model, layers[0])
    rows = slot.rows.detach().clone()
    routers = make_online(model, layers, temperature=0.1, decay=0.9)
    assert len(routers) == len(layers)
    assert all(isinstance(r, OnlineKMeansTopKRouter) for r in routers)
    assert torch.equal(routers[0].rows, F.normalize(rows.float(), dim=-1))
    assert not any("centroids" in name for name, _ in model.named_parameters())
    ids = torch.randint(0, 97, (2, 9))
    model.train()
    model(input_ids=ids)
    model.eval()
    assert all(r.updates == 1 for r in routers)
    assert not torch.equal(routers[0].rows, rows)  # moved by the forward pass
    out = model(input_ids=ids).last_hidden_state
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe"])
def test_online_centroids_start_from_unit_rows_so_the_step_ignores_the_rows_norms(
    family: str,
) -> None:
    ids = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(3))
    moved = []
    for scale in (20.0, 0.05):  # hardly a step from raw rows of norm ~20, a jump from ~0.05
        model = _build(family)
        layers = attach_moe(model)
        assert layers[0].top_k > 1
        slot = router_slot(model, layers[0])
        experts, hidden = slot.rows.shape
        with torch.no_grad():  # unequal, non-unit rows
            slot.rows.mul_(scale * torch.linspace(0.5, 2.0, experts)[:, None] / slot.rows.norm())
        raw = slot.rows.detach().float().clone()
        routers = make_online(model, layers, temperature=0.1, decay=0.5)
        start = routers[0].rows.clone()
        assert torch.allclose(start.norm(dim=-1), torch.ones(experts))
        # routing is unchanged by the normalisation: cosine to the raw rows, the same top-k
        x = torch.randn(16, hidden, generator=torch.Generator().manual_seed(4))
        reference = OnlineKMeansTopKRouter(raw, 0.1, layers[0].top_k, 0.5, layers[0].renormalized)
        on_raw = reference.eval()(x)
        on_unit = routers[0].eval()(x)
        assert torch.equal(on_raw[2], on_unit[2])
        assert torch.allclose(on_raw[1], on_unit[1], atol=1e-6)
        model.train()
        model(input_ids=ids)
        assert routers[0].updates == 1
        moved.append(routers[0].rows - start)
    assert moved[0].abs().max() > 1e-3  # a real step, the same whatever the rows' norms
    assert torch.allclose(moved[0], moved[1], atol=1e-6)


def test_families_without_a_plain_top_k_router_are_refused() -> None:
    from sbabench.moe.experts import Unsupported

    model = _build("deepseek_v3")
    layers = attach_moe(model)
    with pytest.raises(Unsupported, match="not a bias-free softmax top-k router"):
        make_online(model, layers, 0.1, 0.9)


ROUTERS = """\
name: routers
models:
  - {name: fixed, source: upcycle, experts: 4, layers: [1]}
  - {name: online, source: upcycle, experts: 4, layers: [1], router: online-kmeans}
  - {name: aux, source: upcycle, experts: 4, layers: [1], train: {aux_loss: 0.05}}
  - {name: frozen, source: upcycle, experts: 4, layers: [1], train: {router: frozen}}
aggregators: [linear]
tasks: [WordSim353]
train: {steps: 3, batch_size: 4, lr: 1.0e-3, max_length: 32}
settings: {device: cpu}
"""


def test_router_suite_trains_online_centroids_without_gradient(tmp_path: Path) -> None:
    from sbabench.run.execute import run_suite
    from sbabench.suite import parse_suite

    suite = parse_suite(ROUTERS)
    outcome = run_suite(suite, tmp_path)
    assert outcome.exit_code == 0, outcome.failed
    logs = {r.model: r.training for r in outcome.results}
    assert all(log is not None and log.steps == 3 for log in logs.values())
    aux, fixed = logs["aux"], logs["fixed"]
    assert aux is not None and len(aux.load_balancing_loss) == 3
    assert fixed is not None and fixed.load_balancing_loss == []
    online, frozen = logs["online"], logs["frozen"]
    assert online is not None and online.trainable_parameters < fixed.trainable_parameters
    assert frozen is not None and frozen.trainable_parameters == online.trainable_parameters
    # every checkpoint holds its router's moved centroids: the online router's (a buffer moved
    # by running means) and the learned ones (parameters moved by gradient), from one start
    from sbabench.models.encoder import build_encoder

    name = "encoder.layer.1.output.dense.router.centroids"
    online_start = build_encoder(suite.models[1], device="cpu").model.get_buffer(name)
    fixed_start = build_encoder(suite.models[0], device="cpu").model.get_parameter(name)
    assert torch.equal(online_start, fixed_start)  # online-kmeans starts from the k-means router
    states = [torch.load(p, weights_only=True) for p in (tmp_path / ".cache").rglob("*.pt")]
    assert len(states) == 4
    moved = [state for state in states if name in state]
    assert len(moved) == 3  # the frozen router's checkpoint does not hold it: it did not train
    assert all(not torch.equal(state[name], online_start) for state in moved)
    for result in outcome.results:
        assert result.geometry is not None
        load = next(iter(result.geometry.layers.values())).load
        assert load is not None and load.tokens > 0 and load.experts == 4


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{name: d, source: dense, router: online-kmeans}", "router"),
        ("{name: d, source: dense, train: {router: online-kmeans}}", "MoE models only"),
        (
            "{name: m, source: upcycle, router: online-kmeans, train: {router: learned}}",
            "no weights to learn",
        ),
        ("{name: m, source: upcycle, train: {router: online-kmeans, aux_loss: 0.1}}", "aux_loss"),
        (
            "{name: m, source: upcycle, router: online-kmeans, train: {router: loss-free}}",
            "train.router is loss-free",
        ),
        ("{name: m, source: upcycle, train: {router: frozen, bias_rate: 0.01}}", "is frozen"),
        (
            "{name: m, source: upcycle, train: {router: loss-free, bias_rate: -0.001}}",
            "greater than 0 (got -0.001)",
        ),
        (
            "{name: m, source: upcycle, train: {router: loss-free, bias_rate: true}}",
            "valid number",
        ),
        (
            "{name: m, source: upcycle, train: {router: loss-free, bias_rate: fast}}",
            "valid number",
        ),
    ],
)
def test_bad_router_options_are_refused_with_a_location(
    tmp_path: Path, entry: str, message: str
) -> None:
    suite = tmp_path / "bad.yaml"
    suite.write_text(
        "name: bad\nmodels:\n  - " + entry + "\naggregators: [linear]\ntasks: [WordSim353]\n"
        "train: {steps: 1}\n"
    )
    result = CliRunner().invoke(main, ["run", str(suite), "--results", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "bad.yaml:3" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_a_models_own_router_replaces_the_suites_loss_free_one() -> None:
    from sbabench.suite import parse_suite

    suite = parse_suite(
        "name: s\nmodels:\n"
        "  - {name: balanced, source: upcycle, experts: 4, layers: [1]}\n"
        "  - {name: frozen, source: upcycle, experts: 4, layers: [1], train: {router: frozen}}\n"
        "aggregators: [linear]\ntasks: [WordSim353]\n"
        "train: {steps: 1, router: loss-free, bias_rate: 0.01}\n",
        check=False,
    )
    balanced, frozen = (suite.train_for(model) for model in suite.models)
    assert balanced is not None and (balanced.router, balanced.bias_rate) == ("loss-free", 0.01)
    assert frozen is not None and frozen.router == "frozen"
