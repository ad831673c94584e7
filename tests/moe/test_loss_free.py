"""Auxiliary-loss-free balancing: the update rule, selection-only biases, and each family."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from sbabench.moe import MoELayer, attach_moe, observing
from sbabench.moe.experts import Unsupported
from sbabench.moe.loss_free import LossFreeBias, LossFreeTopKRouter, make_loss_free
from sbabench.moe.routers import token_mask
from sbabench.moe.upcycle import LinearRouter, UpcycledMoE
from tests.moe.nomic_layout import TinyNomicMoE
from tests.moe.test_families import _build

PLAIN_TOP_K = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"]


def _load(index: torch.Tensor, experts: int) -> torch.Tensor:
    return torch.bincount(index.reshape(-1), minlength=experts).float()


def _cv(index: torch.Tensor, experts: int) -> float:
    counts = _load(index, experts)
    return float(counts.std(unbiased=False) / counts.mean())


def test_one_step_moves_each_bias_by_the_rule_by_hand() -> None:
    balance = LossFreeBias(5, rate=0.01).train()
    start = torch.tensor([0.02, -0.01, 0.0, 0.03, -0.02])
    balance.biases.copy_(start)
    scores = torch.softmax(torch.randn(12, 5, generator=torch.Generator().manual_seed(0)), -1)
    real = torch.ones(12, dtype=torch.bool)
    real[-3:] = False  # padding: not counted
    with token_mask(nn.Sequential(balance), real):
        index = balance.select(scores, 2)
    assert torch.equal(index, torch.topk(scores + start, 2, dim=-1).indices)
    load = _load(index[:9], 5)
    balance.step()
    expected = start + 0.01 * torch.sign(load.mean() - load)
    assert torch.allclose(balance.biases, expected, atol=1e-7)
    assert not torch.equal(balance.biases, start)
    assert torch.equal(balance.counted, torch.zeros(5))  # the next step counts afresh


def test_biases_stay_still_and_uncounted_outside_training() -> None:
    balance = LossFreeBias(3, rate=0.1).eval()
    balance.select(torch.rand(8, 3), 1)
    assert torch.equal(balance.counted, torch.zeros(3))
    assert list(balance.parameters()) == [] and set(balance.state_dict()) == {"bias"}


def _skewed_moe(experts: int = 4, hidden: int = 8) -> UpcycledMoE:
    """Top-1 routing whose expert 0 leans toward where the tokens are."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(experts, hidden, generator=gen) * 0.5
    weight[0] += 0.5
    w1, w2 = torch.randn(experts, 16, hidden), torch.randn(experts, hidden, 16)
    return UpcycledMoE(w1, torch.zeros(experts, 16), w2, torch.zeros(hidden), LinearRouter(weight), 1, True)  # fmt: skip


def _balanced(moe: UpcycledMoE, rate: float) -> LossFreeBias:
    """Give a lone upcycled layer a loss-free bias through its family's router slot."""
    model = nn.Sequential(moe)
    (balance,) = make_loss_free(model, attach_moe(model), rate)
    return balance


def _tokens(seed: int) -> torch.Tensor:
    return torch.randn(256, 8, generator=torch.Generator().manual_seed(seed)) + 0.7


def test_the_bias_picks_the_experts_and_the_gate_weights_stay_unbiased() -> None:
    moe = _skewed_moe()
    moe.top_k = 2
    balance = _balanced(moe, rate=0.1)
    assert moe.balance is balance
    bias = torch.tensor([-0.3, 0.1, 0.2, 0.0])
    balance.biases.copy_(bias)
    x = _tokens(1)
    probs = moe.router(x)
    weights, index = moe.route(x)
    assert torch.equal(index, torch.topk(probs + bias, 2, dim=-1).indices)
    chosen = probs.gather(-1, index)
    torch.testing.assert_close(weights, chosen / chosen.sum(-1, keepdim=True))
    assert not torch.equal(index, torch.topk(probs, 2, dim=-1).indices)  # the bias mattered


def test_a_skewed_router_is_balanced_within_a_few_steps() -> None:
    moe = _skewed_moe()
    held_out = _tokens(99)
    before = _cv(moe.eval().route(held_out)[1], 4)
    assert before > 0.3
    balance = _balanced(moe, rate=0.02)
    moe.train()
    for step in range(10):
        moe.route(_tokens(step))
        balance.step()
    after = _cv(moe.eval().route(held_out)[1], 4)
    assert after < 0.5 * before
    assert float(balance.biases[0]) < 0  # the crowded expert is held back


@pytest.mark.parametrize("family", PLAIN_TOP_K)
def test_transformers_routers_take_a_bias_that_changes_nothing_until_trained(family: str) -> None:
    model = _build(family)
    layers = attach_moe(model)
    ids = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        before = model(input_ids=ids).last_hidden_state
    parameters = dict(model.named_parameters())
    biases = make_loss_free(model, layers, rate=0.05)
    assert dict(model.named_parameters()) == parameters  # same tensors, same names
    assert all(isinstance(m.gate, LossFreeTopKRouter) for m in _blocks(model, layers))
    with torch.inference_mode():
        assert torch.equal(model(input_ids=ids).last_hidden_state, before)
    assert make_loss_free(model, layers, rate=0.05) == biases  # a second call keeps them
    seen: list[torch.Tensor] = []
    model.train()
    with observing(model, lambda call: seen.append(call.index)):
        model(input_ids=ids)
    for bias in biases:
        bias.step()
    for index, bias in zip(seen, biases, strict=True):  # the combination saw what was counted
        load = _load(index, bias.biases.numel())
        assert torch.equal(bias.biases, 0.05 * torch.sign(load.mean() - load))


def _blocks(model: nn.Module, layers: list[MoELayer]) -> list[Any]:
    return [model.get_submodule(layer.block) for layer in layers]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: _build("deepseek_v3"), "not a bias-free softmax top-k router"),
        (lambda: _build("gpt_oss"), "not a bias-free softmax top-k router"),
        (lambda: TinyNomicMoE().eval(), "does not expose its router"),
    ],
    ids=["deepseek_v3", "gpt_oss", "nomic"],
)
def test_routers_that_cannot_take_a_bias_are_refused_with_the_reason(
    build: object, message: str
) -> None:
    from sbabench.run.training import TrainingError, prepare_routers
    from sbabench.suite import TrainSpec

    model = build()  # type: ignore[operator]
    layers = attach_moe(model)
    with pytest.raises(Unsupported, match=message):
        make_loss_free(model, layers, 0.001)
    encoder = SimpleNamespace(model=model, moe_layers=layers)
    with pytest.raises(TrainingError, match="router: loss-free cannot be used") as caught:
        prepare_routers(encoder, TrainSpec(router="loss-free"))  # type: ignore[arg-type]
    assert message in str(caught.value) and "router: learned" in caught.value.render()


def test_an_online_kmeans_router_is_refused() -> None:
    from sbabench.moe.routers import make_online

    model = _build("mixtral")
    layers = attach_moe(model)
    make_online(model, layers, 0.1, 0.9)
    with pytest.raises(Unsupported, match="online K-means"):
        make_loss_free(model, layers, 0.001)
