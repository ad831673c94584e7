"""Routing sparsity: another top-k in every family, `all` as the full softmax mixture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from sbabench.aggregators import resolve
from sbabench.cli import main
from sbabench.errors import ModelSpecError
from sbabench.moe import attach_moe, expert_mlps, observing, set_aggregator
from sbabench.moe.sparsity import set_top_k
from sbabench.moe.upcycle import LinearRouter, UpcycledMoE
from tests.moe.nomic_layout import TinyNomicMoE
from tests.moe.test_families import FAMILIES, _build

SOFTMAX = ["mixtral", "qwen3_moe", "olmoe"]
"""Families whose block is the routed experts alone, weighted by a softmax over all experts."""


def _ids(seed: int = 2) -> torch.Tensor:
    return torch.randint(0, 97, (3, 10), generator=torch.Generator().manual_seed(seed))


def _forward(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state


def _indices(model: nn.Module, run: Any) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    with observing(model, lambda call: seen.append(call.index)):
        run()
    return seen


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_models_own_top_k_is_its_own_forward_bit_for_bit(family: str) -> None:
    model = _build(family)
    own = _forward(model, _ids())
    layers = attach_moe(model)
    assert set_top_k(model, layers, layers[0].top_k) == layers
    set_aggregator(model, resolve("linear").fn)
    assert torch.equal(_forward(model, _ids()), own)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_another_top_k_routes_each_token_to_that_many_experts(family: str) -> None:
    model = _build(family)
    layers = set_top_k(model, attach_moe(model), "all")
    experts = layers[0].num_experts
    assert all(layer.top_k == experts for layer in layers)
    for index in _indices(model, lambda: _forward(model, _ids())):
        assert index.shape[-1] == experts
        assert torch.equal(index.sort(-1).values[0], torch.arange(experts))
    layers = set_top_k(model, layers, 1)
    assert all(index.shape[-1] == 1 for index in _indices(model, lambda: _forward(model, _ids())))


def _hand_mixture(probs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """sum_e p_e y_e: (tokens, experts) weights, (tokens, experts, hidden) expert outputs."""
    return torch.einsum("te,teh->th", probs, outputs)


@pytest.mark.parametrize("family", SOFTMAX)
def test_all_is_the_full_softmax_mixture_in_transformers_families(family: str) -> None:
    model = _build(family)
    layers = set_top_k(model, attach_moe(model), "all")
    block: Any = model.get_submodule(layers[0].block)
    x = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(5))
    flat = x.reshape(-1, 32)
    with torch.inference_mode():
        ours = block(x).reshape(-1, 32)
        probs = torch.softmax(F.linear(flat, block.gate.weight).float(), dim=-1)
        hand = _hand_mixture(probs, expert_mlps(model, layers[0]).forward(flat))
    torch.testing.assert_close(ours, hand, atol=1e-6, rtol=0)


def test_all_is_the_full_softmax_mixture_in_nomic_without_renormalising() -> None:
    torch.manual_seed(0)
    model = TinyNomicMoE().eval()
    layers = attach_moe(model)
    mid = set_top_k(model, layers, 3)
    with torch.inference_mode():
        seen: list[torch.Tensor] = []
        with observing(model, lambda call: seen.append(call.weights)):
            model(torch.randint(0, 50, (2, 9)))
    assert all(w.shape[-1] == 3 and bool((w.sum(-1) < 1).all()) for w in seen)  # not renormalised
    set_top_k(model, mid, "all")
    block: Any = model.get_submodule(layers[0].block)
    x = torch.randn(2, 9, 32, generator=torch.Generator().manual_seed(6))
    flat = x.reshape(-1, 32)
    with torch.inference_mode():
        probs = torch.softmax(block.router.layer(flat), dim=-1)
        outputs = expert_mlps(model, layers[0]).forward(flat)
        hand = _hand_mixture(probs, outputs) + block.experts.bias
        torch.testing.assert_close(block(x).reshape(-1, 32), hand, atol=1e-6, rtol=0)


def _upcycled(renormalize: bool) -> nn.Sequential:
    gen = torch.Generator().manual_seed(1)
    experts, hidden, ffn = 6, 16, 24
    w1, b1 = torch.randn(experts, ffn, hidden, generator=gen) / 4, torch.randn(experts, ffn, generator=gen)  # fmt: skip
    w2, bias = torch.randn(experts, hidden, ffn, generator=gen) / 5, torch.randn(hidden, generator=gen)  # fmt: skip
    router = LinearRouter(torch.randn(experts, hidden, generator=gen))
    return nn.Sequential(UpcycledMoE(w1, b1, w2, bias, router, 2, renormalize))


@pytest.mark.parametrize("renormalize", [True, False])
def test_all_is_the_full_softmax_mixture_in_upcycled_layers(renormalize: bool) -> None:
    model = _upcycled(renormalize)
    (layer,) = set_top_k(model, attach_moe(model), "all")
    moe: Any = model[0]
    x = torch.randn(40, 16, generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        hidden = F.gelu(torch.einsum("efh,th->tef", moe.w1, x) + moe.b1)
        outputs = torch.einsum("ehf,tef->teh", moe.w2, hidden)
        hand = _hand_mixture(moe.router(x), outputs) + moe.bias
        torch.testing.assert_close(model(x), hand, atol=1e-6, rtol=0)
    assert layer.top_k == 6 and moe.combine.top_k == 6


@pytest.mark.parametrize(("top_k", "message"), [(0, "has 6 experts"), (7, "has 6 experts")])
def test_a_top_k_that_does_not_fit_the_layer_is_refused(top_k: int, message: str) -> None:
    model = _upcycled(True)
    with pytest.raises(ModelSpecError, match=message) as caught:
        set_top_k(model, attach_moe(model), top_k)
    assert "from 1 to 6, or all" in caught.value.render()


def test_the_upcycled_minilm_routes_to_every_expert_and_its_own_k_changes_nothing() -> None:
    from sbabench.models.encoder import build_encoder
    from sbabench.models.spec import UpcycleModel

    entry = {"name": "m", "source": "upcycle", "experts": 4, "layers": [1], "router": "random"}
    texts = ["a cat sat on the mat", "markets fell sharply on monday"]
    plain = build_encoder(UpcycleModel.model_validate(entry), device="cpu")
    own = build_encoder(UpcycleModel.model_validate({**entry, "routing": {"top_k": 2}}), "cpu")
    every = build_encoder(UpcycleModel.model_validate({**entry, "routing": {"top_k": "all"}}), "cpu")  # fmt: skip
    assert own.moe_layers == plain.moe_layers
    assert [layer.top_k for layer in every.moe_layers] == [4]
    assert (plain.encode(texts) == own.encode(texts)).all()
    (index, *_) = _indices(every.model, lambda: every.encode(texts))
    assert index.shape[-1] == 4
    assert not (plain.encode(texts) == every.encode(texts)).all()


SUITE = "name: bad\nmodels:\n  - {entry}\naggregators: [linear]\ntasks: [WordSim353]\n"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{name: m, source: upcycle, routing: {top_k: 0}}", "a whole number from 1"),
        ("{name: m, source: upcycle, routing: {top_k: 2.5}}", "or all (got 2.5)"),
        ("{name: m, source: upcycle, routing: {top_k: most}}", "or all (got 'most')"),
        ("{name: m, source: upcycle, routing: {top_k: true}}", "or all (got True)"),
        ("{name: m, source: upcycle, routing: {top_k: 9}}", "routing.top_k (9) cannot exceed"),
        ("{name: d, source: dense, routing: {top_k: 1}}", "MoE models only"),
        ("{name: h, source: huggingface, path: HF, routing: {top_k: 5}}", "has 4 experts"),
    ],
)
def test_bad_routing_is_refused_with_a_location(tmp_path: Path, entry: str, message: str) -> None:
    hub = tmp_path / "tiny-moe"
    hub.mkdir()
    (hub / "config.json").write_text('{"num_hidden_layers": 2, "num_local_experts": 4}')
    suite = tmp_path / "bad.yaml"
    suite.write_text(SUITE.format(entry=entry.replace("HF", str(hub))))
    result = CliRunner().invoke(main, ["validate", str(suite)])
    assert result.exit_code == 2, result.output
    assert message in result.output and "bad.yaml:3" in result.output
    assert "Traceback" not in result.output
