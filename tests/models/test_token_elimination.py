"""Token elimination: the unpruned case is exact, the kept tokens are the most-attended ones,
padding and [CLS] are handled, the FLOPs share matches a hand count, bad options are refused."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sbabench.cli import main
from sbabench.models.encoder import build_encoder
from sbabench.models.token_elimination import (
    LayerCost,
    Schedule,
    eliminating_forward,
    flops_fraction,
    prepare,
)
from sbabench.suite import parse_suite

TEXTS = [
    "a much longer sentence about the geometry of experts in mixture models",
    "hello world",
    "the router sends each token to two experts",
]


def _model(entry: str) -> object:
    suite = parse_suite(f"name: t\nmodels: [{entry}]\naggregators: [linear]\ntasks: [WordSim353]")
    return build_encoder(suite.models[0], device="cpu")


@pytest.mark.parametrize("source", ["source: dense", "source: upcycle, experts: 4, layers: [1]"])
@torch.no_grad()
def test_tilt_rate_zero_reproduces_the_unpruned_embeddings_exactly(source: str) -> None:
    """The elimination's own path (its attention hooks installed, its layer loop) at tilt rate 0
    against the model without any of it: the hooks and the loop change nothing."""
    plain: Any = _model(f"{{name: m, {source}}}")
    hooked: Any = _model(f"{{name: m, {source}, token_elimination: {{tilt_rate: 0.3}}}}")
    assert hooked.model.config._attn_implementation != plain.model.config._attn_implementation
    schedule = Schedule(0.0, 0, len(hooked.model.encoder.layer))
    features = eliminating_forward(hooked.model, hooked.tokenize(TEXTS), schedule)
    for module in hooked.pipeline[1:]:
        features = module(features)
    expected = plain.forward(plain.tokenize(TEXTS))
    assert torch.equal(features["sentence_embedding"], expected)
    # and a spec with tilt rate 0 installs nothing: it is the plain model, bit for bit
    zero: Any = _model(f"{{name: m, {source}, token_elimination: {{tilt_rate: 0.0}}}}")
    assert zero.model.config._attn_implementation == plain.model.config._attn_implementation
    assert np.array_equal(plain.encode(TEXTS), zero.encode(TEXTS))


def test_the_layer_loop_with_nothing_dropped_is_the_model() -> None:
    plain: Any = _model("{name: m, source: dense}")
    # tokens are dropped after start_layer, never after the last layer: nothing is dropped here
    loop: Any = _model(
        "{name: m, source: dense, token_elimination: {tilt_rate: 0.5, start_layer: 5}}"
    )
    assert loop.elimination.tilt_rate == 0.5
    np.testing.assert_allclose(loop.encode(TEXTS), plain.encode(TEXTS), atol=1e-6)


def _tiny_bert() -> torch.nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=32,
        attn_implementation="eager",
    )
    return BertModel(config).eval()


def _reference(model: torch.nn.Module, ids: torch.Tensor, tilt: float) -> torch.Tensor:
    """Layer by layer by hand: keep [CLS] and the top tokens by the attention they receive."""
    layers: Any = model.encoder.layer  # type: ignore[union-attr]
    hidden = model.embeddings(input_ids=ids)  # type: ignore[operator]
    n = ids.shape[1]
    for index, layer in enumerate(layers):
        _, weights = layer.attention.self(hidden)  # eager: (1, heads, tokens, tokens)
        hidden = layer(hidden)
        if index == len(layers) - 1:
            break
        acc = weights.sum(dim=(1, 2))[0]
        acc[0] = float("inf")
        keep = math.ceil(round((1 - tilt) ** (index + 1) * n, 9))
        chosen = torch.sort(torch.argsort(acc, descending=True)[:keep]).values
        hidden = hidden[:, chosen]
    return hidden


@torch.no_grad()
def test_kept_tokens_are_cls_and_the_most_attended_ones() -> None:
    model = _tiny_bert()
    ids = torch.randint(1, 50, (1, 11))
    expected = _reference(model, ids, tilt=0.5)
    schedule = prepare(model, tilt_rate=0.5, start_layer=0)
    features = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    out = eliminating_forward(model, features, schedule)
    assert out["token_embeddings"].shape[1] == math.ceil(0.25 * 11) == expected.shape[1]
    torch.testing.assert_close(out["token_embeddings"], expected, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_padding_never_survives_and_changes_nothing() -> None:
    model = _tiny_bert()
    schedule = prepare(model, tilt_rate=0.3, start_layer=0)
    long, short = torch.randint(1, 50, (1, 12)), torch.randint(1, 50, (1, 5))
    alone = [
        eliminating_forward(model, {"input_ids": t, "attention_mask": torch.ones_like(t)}, schedule)
        for t in (long, short)
    ]
    batch = torch.zeros(2, 12, dtype=torch.long)
    batch[0], batch[1, :5] = long[0], short[0]
    mask = (torch.arange(12) < torch.tensor([[12], [5]])).long()
    out = eliminating_forward(model, {"input_ids": batch, "attention_mask": mask}, schedule)
    kept = out["attention_mask"].bool()
    assert kept.sum(1).tolist() == [math.ceil(round(0.49 * 12, 9)), math.ceil(round(0.49 * 5, 9))]
    for row, single in enumerate(alone):
        torch.testing.assert_close(
            out["token_embeddings"][row][kept[row]],
            single["token_embeddings"][0],
            atol=1e-5,
            rtol=0,
        )


def test_flops_fraction_matches_a_hand_count() -> None:
    # two layers, d = 2, f = 4; tokens dropped after layer 0 at R = 0.5: a 4-token text runs
    # 4 then 2 tokens, a 3-token text 3 then 2
    cost = LayerCost(hidden=2, ffn=4)

    def by_hand(n: int) -> float:
        return 8 * n * 4 + 4 * n * n * 2 + 4 * n * 2 * 4

    total, per_layer = flops_fraction([4, 3], Schedule(0.5, 0, 2), [cost, cost])
    full = by_hand(4) + by_hand(3)
    assert per_layer == [1.0, pytest.approx((by_hand(2) + by_hand(2)) / full)]
    assert total == pytest.approx((full + by_hand(2) * 2) / (2 * full))
    moe = LayerCost(hidden=2, ffn=4, experts_per_token=2, router_experts=8)
    assert moe.flops(3) == pytest.approx(8 * 3 * 4 + 4 * 9 * 2 + 2 * 4 * 3 * 2 * 4 + 2 * 3 * 2 * 8)
    assert flops_fraction([5], Schedule(0.0, 0, 3), [cost] * 3) == (1.0, [1.0, 1.0, 1.0])


def test_a_tilt_rate_sweep_records_the_flops_share_and_the_encode_time(tmp_path: Path) -> None:
    suite = tmp_path / "te.yaml"
    suite.write_text(
        "name: te\nmodels:\n"
        "  - {name: full, source: dense}\n"
        "  - {name: tilt, source: dense, token_elimination: {tilt_rate: 0.2, start_layer: 1}}\n"
        "tasks: [WordSim353]\nsettings: {device: cpu}\n"
    )
    out = tmp_path / "r"
    result = CliRunner().invoke(main, ["run", str(suite), "--results", str(out)])
    assert result.exit_code == 0, result.output
    files = {p.parent.parent.name: json.loads(p.read_text()) for p in out.rglob("WordSim353.json")}
    assert files["full"]["token_elimination"] is None
    record = files["tilt"]["token_elimination"]
    assert record["tilt_rate"] == 0.2 and record["texts"] > 0 and record["encode_s"] > 0
    assert 0.3 < record["flops_fraction"] < 1.0
    assert record["flops_fraction_per_layer"][:2] == [1.0, 1.0]  # layers 0 and 1 run whole
    plots = CliRunner().invoke(main, ["plot", str(out / "te"), "--output", str(tmp_path / "p")])
    assert plots.exit_code == 0, plots.output
    assert (tmp_path / "p" / "token_elimination.png").is_file()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("{tilt_rate: -0.1}", "token_elimination.tilt_rate: tilt_rate is the share"),
        ("{tilt_rate: 1.0}", "must be in [0, 1) (0 = keep every token); got 1.0"),
        ("{tilt_rate: 0.2, start_layer: 6}", "start_layer is 6, but the model has 6 layers"),
    ],
)
def test_bad_token_elimination_options_are_refused(
    tmp_path: Path, options: str, message: str
) -> None:
    suite = tmp_path / "bad.yaml"
    suite.write_text(
        "name: bad\nmodels:\n"
        f"  - {{name: d, source: dense, token_elimination: {options}}}\n"
        "tasks: [WordSim353]\nsettings: {device: cpu}\n"
    )
    result = CliRunner().invoke(main, ["run", str(suite), "--results", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "bad.yaml:3" in result.output
    assert "Traceback" not in result.output


@torch.no_grad()
def test_a_model_set_up_for_elimination_runs_its_plain_forward_with_the_padding_mask() -> None:
    """Training runs a model's plain forward even when the model is evaluated with elimination
    (its own `token_elimination` applies at evaluation only), and a model trained with
    elimination is then evaluated with its plain forward: with elimination's attention
    installed, that forward must still mask padding, exactly as the model does without it."""
    plain: Any = _model("{name: m, source: dense}")
    hooked: Any = _model("{name: m, source: dense, token_elimination: {tilt_rate: 0.3}}")
    hooked.elimination = None  # as training runs it
    padded = plain.tokenize(TEXTS)
    assert not bool(padded["attention_mask"].all())  # the batch has padding
    assert torch.equal(hooked.forward(hooked.tokenize(TEXTS)), plain.forward(padded))
