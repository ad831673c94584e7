"""MoE adapters on tiny randomly initialised models of each supported family."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from sbabench.aggregators import resolve
from sbabench.errors import ModelSpecError
from sbabench.moe import attach_moe, observing, set_aggregator
from tests.moe.nomic_layout import TinyNomicMoE

COMMON = {
    "vocab_size": 97,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}


def _mixtral() -> nn.Module:
    from transformers import MixtralConfig, MixtralModel

    return MixtralModel(
        MixtralConfig(**COMMON, intermediate_size=48, num_local_experts=4, num_experts_per_tok=2)
    )


def _qwen2_moe() -> nn.Module:
    from transformers import Qwen2MoeConfig, Qwen2MoeModel

    config = Qwen2MoeConfig(
        **COMMON,
        intermediate_size=48,
        moe_intermediate_size=24,
        shared_expert_intermediate_size=40,
        num_experts=6,
        num_experts_per_tok=3,
    )
    return Qwen2MoeModel(config)


def _qwen3_moe() -> nn.Module:
    from transformers import Qwen3MoeConfig, Qwen3MoeModel

    config = Qwen3MoeConfig(
        **COMMON,
        intermediate_size=48,
        moe_intermediate_size=24,
        num_experts=4,
        num_experts_per_tok=2,
        head_dim=8,
    )
    return Qwen3MoeModel(config)


def _olmoe() -> nn.Module:
    from transformers import OlmoeConfig, OlmoeModel

    return OlmoeModel(
        OlmoeConfig(**COMMON, intermediate_size=24, num_experts=4, num_experts_per_tok=2)
    )


DEEPSEEK = {
    **COMMON,
    "intermediate_size": 48,
    "moe_intermediate_size": 24,
    "n_routed_experts": 4,
    "n_shared_experts": 1,
    "num_experts_per_tok": 2,
    "first_k_dense_replace": 0,
    "kv_lora_rank": 16,
    "qk_rope_head_dim": 4,
    "qk_nope_head_dim": 4,
    "v_head_dim": 8,
    "n_group": 1,
    "topk_group": 1,
}


def _deepseek_v2() -> nn.Module:
    from transformers import DeepseekV2Config, DeepseekV2Model

    return DeepseekV2Model(DeepseekV2Config(**DEEPSEEK, q_lora_rank=None))


def _deepseek_v3() -> nn.Module:
    from transformers import DeepseekV3Config, DeepseekV3Model

    return DeepseekV3Model(DeepseekV3Config(**DEEPSEEK, q_lora_rank=16))


def _gpt_oss() -> nn.Module:
    from transformers import GptOssConfig, GptOssModel

    config = GptOssConfig(
        **COMMON,
        intermediate_size=24,
        num_local_experts=4,
        num_experts_per_tok=2,
        head_dim=8,
        layer_types=["full_attention"] * 2,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    return GptOssModel(config)


def _olmoe_64() -> nn.Module:
    """OLMoE-shaped routing: 64 experts, top-8."""
    from transformers import OlmoeConfig, OlmoeModel

    return OlmoeModel(
        OlmoeConfig(**COMMON, intermediate_size=16, num_experts=64, num_experts_per_tok=8)
    )


def _qwen3_moe_64() -> nn.Module:
    """Qwen3-MoE-shaped routing: 64 experts, top-8, renormalised."""
    from transformers import Qwen3MoeConfig, Qwen3MoeModel

    config = Qwen3MoeConfig(
        **COMMON,
        intermediate_size=48,
        moe_intermediate_size=16,
        num_experts=64,
        num_experts_per_tok=8,
        head_dim=8,
        norm_topk_prob=True,
    )
    return Qwen3MoeModel(config)


FAMILIES: dict[str, Callable[[], nn.Module]] = {
    "mixtral": _mixtral,
    "qwen2_moe": _qwen2_moe,
    "qwen3_moe": _qwen3_moe,
    "olmoe": _olmoe,
    "deepseek_v2": _deepseek_v2,
    "deepseek_v3": _deepseek_v3,
    "gpt_oss": _gpt_oss,  # transposed, biased experts with their own gate
}
MANY_EXPERTS: dict[str, Callable[[], nn.Module]] = {
    "olmoe_64": _olmoe_64,
    "qwen3_moe_64": _qwen3_moe_64,
}


def _build(family: str) -> nn.Module:
    torch.manual_seed(0)
    model = {**FAMILIES, **MANY_EXPERTS}[family]().eval()
    if family.startswith("deepseek"):
        # Random init leaves DeepSeek's routing-bias at zero; spread the expert outputs.
        for p in model.parameters():
            nn.init.normal_(p, std=0.2) if p.dim() > 1 else None
    return model


def _states(model: nn.Module) -> torch.Tensor:
    ids = torch.randint(0, 97, (3, 11), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("family", [*FAMILIES, *MANY_EXPERTS])
def test_linear_is_the_models_own_forward_bit_for_bit(family: str, dtype: torch.dtype) -> None:
    """With `linear`, sbabench's grouped expert path and combination give exactly what the
    model's default (grouped_mm) experts implementation gives, in float32 and bfloat16."""
    model = _build(family).to(dtype)
    ids = torch.randint(0, 97, (4, 24), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        own = model(input_ids=ids, attention_mask=mask).last_hidden_state
    attach_moe(model)
    set_aggregator(model, resolve("linear").fn)
    with torch.inference_mode():
        ours = model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert ours.dtype == dtype
    assert torch.equal(ours, own), (ours - own).abs().max()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_linear_patch_reproduces_the_model_and_sba_changes_it(family: str) -> None:
    model = _build(family)
    unpatched = _states(model)
    layers = attach_moe(model)
    assert len(layers) == 2 and all(layer.top_k >= 2 for layer in layers)
    set_aggregator(model, resolve("linear").fn)
    torch.testing.assert_close(_states(model), unpatched, atol=1e-6, rtol=1e-6)

    sba = resolve("sba").fn
    set_aggregator(model, sba)
    seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    with observing(model, lambda c: seen.append((c.outputs, c.weights, c.combined))):
        patched = _states(model)
    assert (patched - unpatched).abs().max() > 1e-4
    assert len(seen) == 2
    for outputs, weights, combined in seen:
        torch.testing.assert_close(combined, sba(outputs, weights))
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in _build(family).parameters()
    )


def test_nomic_layout_is_patched_in_place() -> None:
    torch.manual_seed(0)
    model = TinyNomicMoE().eval()
    names_before = set(model.state_dict())
    ids = torch.randint(0, 50, (2, 9))
    with torch.inference_mode():
        unpatched = model(ids)
    layers = attach_moe(model)
    assert [layer.name for layer in layers] == [
        "layers.1.mlp.experts.combine",
        "layers.3.mlp.experts.combine",
    ]
    assert all(
        not layer.renormalized and layer.top_k == 2 and layer.num_experts == 8 for layer in layers
    )
    assert set(model.state_dict()) == names_before  # a nomic checkpoint still loads
    with torch.inference_mode():
        torch.testing.assert_close(model(ids), unpatched, atol=1e-6, rtol=1e-6)
        set_aggregator(model, resolve("sba").fn)
        seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        with observing(model, lambda c: seen.append((c.outputs, c.weights, c.combined))):
            patched = model(ids)
    assert (patched - unpatched).abs().max() > 1e-4
    for outputs, weights, combined in seen:
        assert (weights.sum(-1) < 1).all()  # top-2 of a softmax over 8, not renormalised
        torch.testing.assert_close(combined, resolve("sba").fn(outputs, weights))


def test_a_dense_model_is_an_error_not_a_silent_dense_run() -> None:
    with pytest.raises(ModelSpecError, match="found no MoE layer in Sequential"):
        attach_moe(nn.Sequential(nn.Linear(4, 4)))


@pytest.mark.parametrize("family", ["mixtral", "gpt_oss", "olmoe_64"])
def test_the_grouped_expert_path_equals_the_per_expert_loop(family: str) -> None:
    """The grouped GEMM path and the per-expert fallback compute the same (token, slot) expert
    outputs; pairs routed to an expert-parallel sentinel get zeros in both."""
    from sbabench.moe.transformers_experts import _grouped_slot_outputs, _looped_slot_outputs

    model = _build(family)
    experts = next(m for m in model.modules() if type(m).__name__.endswith("Experts"))
    gen = torch.Generator().manual_seed(3)
    hidden = torch.randn(40, 32, generator=gen)
    n, k = int(experts.num_experts), 2
    index = torch.stack([torch.randperm(n, generator=gen)[:k] for _ in range(40)])
    with torch.inference_mode():
        grouped = _grouped_slot_outputs(experts, hidden, index)
        looped = _looped_slot_outputs(experts, hidden, index)
        torch.testing.assert_close(grouped, looped, atol=1e-5, rtol=1e-5)
        index[::5, 1] = n  # expert parallelism: not on this rank
        experts._is_expert_parallel = True
        grouped = _grouped_slot_outputs(experts, hidden, index)
        looped = _looped_slot_outputs(experts, hidden, index)
    assert torch.equal(grouped[::5, 1], torch.zeros_like(grouped[::5, 1]))
    torch.testing.assert_close(grouped, looped, atol=1e-5, rtol=1e-5)
