"""The deeper geometry probes: expert weights read right, closed-form Jacobians, hand cases, runs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sbabench.cli import main
from sbabench.geometry.probes import support
from sbabench.geometry.probes.expert_pca import expert_pca_probe
from sbabench.geometry.probes.jacobian import jacobian_probe
from sbabench.geometry.probes.router_coupling import router_coupling_probe
from sbabench.moe import attach_moe, expert_mlps, observing
from sbabench.moe.base import Combination, MoELayer
from sbabench.moe.experts import ExpertMLPs, Unsupported, router_rows, unit_owners
from sbabench.moe.upcycle import UpcycleConfig, upcycle_bert
from sbabench.run.execute import run_suite
from sbabench.suite import parse_suite
from tests.moe.nomic_layout import TinyNomicMoE
from tests.moe.test_families import FAMILIES, _build, _states


def _capture(model: nn.Module, forward: object) -> list[Combination]:
    seen: list[Combination] = []
    with observing(model, seen.append):
        forward()  # type: ignore[operator]
    return seen


def _family_model(family: str) -> tuple[nn.Module, list[MoELayer], list[Combination]]:
    if family == "nomic":
        torch.manual_seed(0)
        model = TinyNomicMoE().eval()
        layers = attach_moe(model)
        ids = torch.randint(0, 50, (2, 9))
        return model, layers, _capture(model, lambda: model(ids))
    if family == "upcycled":
        from tests.moe.test_upcycle import _minilm

        model, tokenizer = _minilm()
        config = UpcycleConfig(experts=4, top_k=2, layers=(1,), drop_ratio=0.3, router="random")
        layers = upcycle_bert(model, config)
        batch = tokenizer(
            ["a sphere of experts", "linear sums collapse"], return_tensors="pt", padding=True
        )  # type: ignore[operator]
        return model, layers, _capture(model, lambda: model(**batch))
    model = _build(family)
    layers = attach_moe(model)
    return model, layers, _capture(model, lambda: _states(model))


@pytest.mark.parametrize("family", [*FAMILIES, "nomic", "upcycled"])
def test_expert_weights_reproduce_the_experts_and_the_closed_form_jacobian_is_exact(
    family: str,
) -> None:
    model, layers, calls = _family_model(family)
    assert len(calls) == len(layers)
    for layer, call in zip(layers, calls, strict=True):
        assert call.inputs is not None and call.index is not None
        # the router rows are the ones that picked each token's top expert
        rows_ = router_rows(model, layer, call.inputs.shape[1])
        logits = call.inputs.float() @ rows_.T
        if family == "upcycled":
            logits = F.normalize(call.inputs.float(), dim=-1) @ F.normalize(rows_, dim=-1).T
        if family == "gpt_oss":  # its router adds a bias (the coupling probe compares rows only)
            logits = logits + model.get_submodule(layer.block).router.bias
        assert torch.equal(logits.argmax(-1), call.index[:, 0])
        mlps = expert_mlps(model, layer)
        assert mlps.num_experts == layer.num_experts
        # the extracted weights give exactly the outputs the model's experts produced
        every = mlps.forward(call.inputs.float())
        rows = torch.arange(len(call.index)).unsqueeze(1)
        torch.testing.assert_close(
            every[rows, call.index], call.outputs.float(), atol=2e-5, rtol=1e-4
        )
        # the closed form equals autograd's Jacobian of those outputs
        x = call.inputs[:3].float()
        closed = mlps.jacobians(x)
        for t in range(len(x)):
            auto = torch.func.jacrev(lambda v, m=mlps: m.forward(v.unsqueeze(0))[0])(x[t])
            torch.testing.assert_close(closed[t], auto, atol=1e-5, rtol=1e-4)


def _hand_mlps() -> ExpertMLPs:
    # identity activation: J_e = W_out[e] W_in[e], constant; W_in = I
    w_in = torch.eye(2).repeat(2, 1, 1)
    w_out = torch.stack([torch.diag(torch.tensor([3.0, 1.0])), torch.eye(2)])
    return ExpertMLPs(w_in, None, w_out, lambda z: z, owner=torch.arange(2))


def test_jacobian_probe_hand_computed() -> None:
    x = torch.randn(5, 2)
    index = torch.tensor([[0, 1]] * 5)
    probe = jacobian_probe(_hand_mlps(), x, index, chunk=2)
    # J0 = diag(3, 1), J1 = I: <J0, J1>_F = 4, ||J0||_F = sqrt(10), ||J1||_F = sqrt(2)
    assert probe["alignment_mean"] == pytest.approx(4 / math.sqrt(20))
    assert probe["alignment_matrix"][0][0] == pytest.approx(1.0)
    assert probe["alignment_selected_pairs"]["mean"] == pytest.approx(4 / math.sqrt(20))
    # singular values: (3, 1) for J0 and (1, 1) for J1, five tokens each
    assert probe["sigma_1"]["mean"] == pytest.approx(2.0)
    assert probe["stable_rank"]["mean"] == pytest.approx((10 / 9 + 2) / 2)
    assert probe["normalised_spectrum"] == pytest.approx([1.0, (1 / 3 + 1) / 2])
    # s_i ~ s_1 i^-a: a = log 3 / log 2 for J0, 0 for J1
    assert probe["decay_exponent"]["mean"] == pytest.approx(math.log(3) / math.log(2) / 2)


def test_expert_pca_probe_hand_computed() -> None:
    t = torch.linspace(-1, 1, 9)
    along_x = torch.stack([t, torch.zeros(9), torch.zeros(9)], 1)
    along_y = torch.stack([torch.zeros(9), 2 * t, torch.ones(9)], 1)
    x = torch.cat([along_x, along_y])
    index = torch.tensor([[0]] * 9 + [[1]] * 9)
    weights = torch.rand(18, 1) + 0.1
    probe = expert_pca_probe(x, weights, index, experts=3, dim=1)
    assert probe["grassmann_matrix"][0][1] == pytest.approx(1.0)  # orthogonal 1-D subspaces
    assert probe["principal_angle_mean_deg"] == pytest.approx(90.0)
    assert [e["effective_rank"] for e in probe["experts"][:2]] == pytest.approx([1.0, 1.0])
    assert probe["experts"][0]["top_m_variance"] == pytest.approx(1.0)
    assert probe["grassmann_split_half_mean"] == pytest.approx(0.0, abs=1e-6)  # noise-free lines
    assert probe["experts"][2] == {"tokens": 0, "note": "needs more than 1 tokens"}
    assert probe["grassmann_matrix"][2][0] is None

    same = expert_pca_probe(torch.cat([along_x, 3 * along_x]), weights, index, 2, 1)
    assert same["grassmann_mean"] == pytest.approx(0.0, abs=1e-6)


def test_router_coupling_probe_hand_computed() -> None:
    rows = torch.tensor([[1.0, 0.0], [0.0, 5.0]])
    x = torch.tensor([[2.0, 0.0], [4.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    index = torch.tensor([[0, 1], [0, 1], [1, 0], [1, 0]])
    weights = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.5, 0.0], [0.5, 0.0]])
    probe = router_coupling_probe(rows, x, weights, index)
    # expert 0 receives (2,0),(4,0) -> direction (1,0); expert 1 receives (0,1),(1,1) -> (1,2)/√5
    assert probe["cosine_own"] == pytest.approx([1.0, 2 / math.sqrt(5)])
    assert probe["matrix"][0][1] == pytest.approx(1 / math.sqrt(5))
    assert probe["matrix"][1][0] == pytest.approx(0.0)
    assert probe["margin_mean"] == pytest.approx((1 - 1 / math.sqrt(5) + 2 / math.sqrt(5)) / 2)


def test_score_vs_activation_and_router_row_similarity_hand_computed() -> None:
    from sbabench.geometry.probes.router_coupling import (
        router_row_similarity,
        score_vs_activation,
    )
    from sbabench.moe.experts import mlps

    eye = torch.eye(2)
    experts = mlps(torch.stack([eye, 2 * eye]), None, torch.stack([eye, eye]), F.relu)
    # expert 0 gets tokens of growing norm with growing weight; expert 1 the same: rho = 1
    x = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [0.0, 4.0], [0.0, 5.0]])
    index = torch.tensor([[0], [0], [0], [1], [1]])
    weights = torch.tensor([[0.1], [0.2], [0.3], [0.4], [0.9]])
    probe = score_vs_activation(experts, x, weights, index)
    # activations 1, 2, 3 (expert 0) and 8, 10 (expert 1, W_in = 2I): the order of the weights
    assert probe["score_activation_spearman"] == pytest.approx(1.0)
    assert probe["score_activation_pairs"] == 5
    # expert 1 has 2 pairs (no correlation of its own); expert 0's is 1
    assert probe["score_activation_spearman_within"] == pytest.approx(1.0)
    reversed_weights = torch.tensor([[0.9], [0.4], [0.3], [0.2], [0.1]])
    assert score_vs_activation(experts, x, reversed_weights, index)[
        "score_activation_spearman"
    ] == pytest.approx(-1.0)
    assert (
        score_vs_activation(experts, x[:2], weights[:2], index[:2])["score_activation_spearman"]
        is None
    )  # two pairs: no correlation
    # the measures disagree: within each expert the weight falls as the activation rises, but
    # expert 1 has the larger weights and activations: pooled rho 1 - 6 * 16 / 210, within -1
    six = torch.tensor([[1.0, 0], [2, 0], [3, 0], [0, 4], [0, 5], [0, 6]])
    falling = torch.tensor([[0.3], [0.2], [0.1], [0.9], [0.8], [0.7]])
    split = score_vs_activation(experts, six, falling, torch.tensor([[0]] * 3 + [[1]] * 3))
    assert split["score_activation_spearman"] == pytest.approx(1 - 96 / 210)
    assert split["score_activation_spearman_within"] == pytest.approx(-1.0)
    # k = 2: every (token, slot) pair counts with its own expert's activation and weight
    x4 = torch.tensor([[1.0, 2.0], [3.0, 0.5], [0.2, 0.1], [2.0, 2.0]])
    index2 = torch.tensor([[0, 1], [1, 0], [0, 1], [1, 0]])
    weights2 = torch.tensor([[0.6, 0.4], [0.7, 0.3], [0.9, 0.1], [0.55, 0.45]])
    norms = x4.norm(dim=1)
    expected_w = [float(weights2[t, s]) for t in range(4) for s in range(2)]
    expected_a = [float(norms[t] * (1 + index2[t, s])) for t in range(4) for s in range(2)]
    from scipy.stats import spearmanr

    got = score_vs_activation(experts, x4, weights2, index2)
    assert got["score_activation_pairs"] == 8
    assert got["score_activation_spearman"] == pytest.approx(
        spearmanr(expected_w, expected_a).statistic
    )
    rows = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, -3.0]])
    # |cos| of the pairs: 1/sqrt(2), 0, 1/sqrt(2)
    assert router_row_similarity(rows) == pytest.approx(math.sqrt(2) / 3)


def test_unsupported_experts_say_why() -> None:
    model = _build("mixtral")
    layer = attach_moe(model)[0]
    experts = model.get_submodule(layer.name.rpartition(".")[0])
    experts._apply_gate = lambda z: z.cumsum(-1)[..., : z.shape[-1] // 2]  # type: ignore[assignment]
    with pytest.raises(Unsupported, match="mixes hidden units"):
        expert_mlps(model, layer)
    experts.has_post_expert_norm = True  # type: ignore[assignment]
    with pytest.raises(Unsupported, match="norm layer"):
        expert_mlps(model, layer)


def test_unit_owners_follow_interleaved_and_chunked_gates() -> None:
    def chunked(z: torch.Tensor) -> torch.Tensor:
        gate, up = z.chunk(2, dim=-1)
        return F.silu(gate) * up

    def interleaved(z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(z[..., ::2]) * (z[..., 1::2] + 1)

    assert unit_owners(chunked, 6, 3, torch.device("cpu")).tolist() == [0, 1, 2, 0, 1, 2]
    assert unit_owners(interleaved, 6, 3, torch.device("cpu")).tolist() == [0, 0, 1, 1, 2, 2]
    assert unit_owners(F.relu, 4, 4, torch.device("cpu")).tolist() == [0, 1, 2, 3]
    with pytest.raises(Unsupported, match="no effect"):
        unit_owners(lambda z: z[..., :2], 4, 2, torch.device("cpu"))


SUITE = """\
name: probes
models:
  - {name: moe, source: upcycle, experts: 4, layers: [1, 3]}
aggregators: [linear, sba]
tasks: [LeeDocSTS]
settings: {device: cpu}
GEOMETRY
"""


def test_probes_run_end_to_end_without_changing_scores(tmp_path: Path) -> None:
    plain = run_suite(parse_suite(SUITE.replace("GEOMETRY", "")), tmp_path)
    scores = {r.aggregator: r.main_score for r in plain.results}
    assert all("probes" not in layer for r in plain.results for layer in r.geometry_layers.values())  # type: ignore[index]

    probed_text = SUITE.replace(
        "GEOMETRY",
        "geometry: {probes: [jacobian, expert-pca, router-coupling], jacobian_tokens: 8}",
    )
    # the results exist but lack the probes: the units are redone, the embeddings come from
    # the cache and the model sees the texts again only for the geometry sample
    probed = run_suite(parse_suite(probed_text), tmp_path)
    assert sorted(probed.computed) == ["moe/linear/LeeDocSTS", "moe/sba/LeeDocSTS"]
    assert {r.aggregator: r.main_score for r in probed.results} == scores
    for r in probed.results:
        assert r.timing_s.texts_encoded == 0 and r.timing_s.texts_from_cache == 50
        assert r.timing_s.texts_run_for_geometry_only == 50  # LeeDocSTS: < 4096 tokens
        layers = r.geometry_layers
        assert len(layers) == 2
        for layer in layers.values():
            jac, pca, coupling = (
                layer["probes"][p] for p in ("jacobian", "expert-pca", "router-coupling")
            )
            assert jac["tokens"] == 8 and 0 < jac["alignment_mean"] < 1
            assert np.allclose(np.diag(jac["alignment_matrix"]), 1.0)
            assert 0 < pca["grassmann_mean"] <= 1 and pca["effective_rank_mean"] > 1
            # the k-means router's centroids point at what their experts receive
            assert coupling["margin_mean"] > 0
            assert -1 <= coupling["score_activation_spearman"] <= 1
            assert -1 <= coupling["score_activation_spearman_within"] <= 1
            assert coupling["score_activation_pairs"] > 0
            assert 0 < coupling["router_row_abs_cosine_mean"] < 1

    again = run_suite(parse_suite(probed_text), tmp_path)
    assert again.computed == [] and len(again.cached) == 2
    # a result whose probes come from an older geometry version is planned again
    from sbabench.run.plan import plan_suite
    from sbabench.run.results import load_result, save_result

    path = next(tmp_path.rglob("moe/sba/LeeDocSTS.json"))
    old = load_result(path)
    assert old is not None and old.geometry is not None
    save_result(
        path, old.model_copy(update={"geometry": old.geometry.model_copy(update={"version": 5})})
    )
    assert [p.unit.label for p in plan_suite(parse_suite(probed_text), tmp_path).todo] == [
        "moe/sba/LeeDocSTS"
    ]
    save_result(path, old)
    # other probe settings are other numbers: those units are redone
    fewer = run_suite(
        parse_suite(probed_text.replace("jacobian_tokens: 8", "jacobian_tokens: 4")), tmp_path
    )
    assert len(fewer.computed) == 2
    assert all(
        layer["probes"]["jacobian"]["tokens"] == 4
        for r in fewer.results
        for layer in r.geometry_layers.values()  # type: ignore[index]
    )

    shown = CliRunner().invoke(main, ["show", str(tmp_path), "--geometry"])
    assert shown.exit_code == 0 and "J align" in shown.output, shown.output
    assert "router-expert coupling" in shown.output and "router margin" in shown.output
    plots = CliRunner().invoke(main, ["plot", str(tmp_path), "--output", str(tmp_path / "png")])
    assert plots.exit_code == 0, plots.output
    assert (tmp_path / "png" / "probes_moe__sba.png").is_file()


@pytest.mark.parametrize(
    ("geometry", "message"),
    [
        (
            "geometry: {probes: [hessian]}",
            ":7:21: geometry.probes[0]: unknown probe 'hessian'; use any of: expert-pca, jacobian, router-coupling",
        ),
        ("geometry: {tokens: 0, probes: [jacobian]}", "probes need sampled tokens"),
        ("geometry: {probes: [jacobian, jacobian]}", "must not repeat"),
        ("geometry: {tokens: 16, probes: [jacobian], jacobian_tokens: 32}", "cannot exceed"),
        ("geometry: {jacobian_tokens: 0}", "jacobian: Input should be greater than or equal to 1"),
        (
            "geometry: {subspace_dim: 5000}",
            "expert-pca: Input should be less than or equal to 4096",
        ),
    ],
)
def test_bad_geometry_blocks_are_located_errors(
    tmp_path: Path, geometry: str, message: str
) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE.replace("GEOMETRY", geometry))
    result = CliRunner().invoke(main, ["validate", str(suite)])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_the_older_geometry_tokens_setting_still_works() -> None:
    suite = parse_suite(
        SUITE.replace("GEOMETRY", "").replace("{device: cpu}", "{device: cpu, geometry_tokens: 64}")
    )
    assert suite.geometry.tokens == 64


def test_inspect_lists_which_probes_can_run(tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(
        SUITE.replace("GEOMETRY", "").replace(
            "experts: 4, layers: [1, 3]", "experts: 4, layers: [1], router: random"
        )
    )
    shown = CliRunner().invoke(main, ["inspect", str(suite)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "encoder.layer.1.output.dense.combine" in shown.output and "│ all" in shown.output
    missing = CliRunner().invoke(main, ["inspect", str(suite), "--model", "nope"])
    assert missing.exit_code == 2 and "no model named 'nope'" in missing.output

    model = _build("mixtral")
    layer = attach_moe(model)[0]
    assert support(model, layer) == dict.fromkeys(
        ("jacobian", "expert-pca", "router-coupling"), "ok"
    )
    model.get_submodule(layer.name.rpartition(".")[0]).has_post_expert_norm = True  # type: ignore[assignment]
    model.get_submodule(layer.block).gate.weight = nn.Parameter(torch.zeros(3, 3))
    verdict = support(model, layer)
    assert "norm layer" in verdict["jacobian"] and "expected one" in verdict["router-coupling"]


def _chunked_silu(z: torch.Tensor) -> torch.Tensor:
    gate, up = z.chunk(2, dim=-1)
    return F.silu(gate) * up


def _interleaved_sigmoid(z: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(1.7 * z[..., ::2]) * (z[..., 1::2] + 1)


_GATES = {
    "gelu": (F.gelu, 1),
    "tanh": (torch.tanh, 1),
    "swiglu": (_chunked_silu, 2),
    "gpt-oss-like": (_interleaved_sigmoid, 2),
}


@settings(max_examples=20, deadline=None)
@given(
    gate=st.sampled_from(sorted(_GATES)),
    experts=st.integers(1, 4),
    hidden=st.integers(1, 6),
    ffn=st.integers(1, 7),
    bias=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_closed_form_jacobian_equals_autograd_for_any_shape_and_gate(
    gate: str, experts: int, hidden: int, ffn: int, bias: bool, seed: int
) -> None:
    g, per_unit = _GATES[gate]
    gen = torch.Generator().manual_seed(seed)
    w_in = torch.randn(experts, per_unit * ffn, hidden, generator=gen, dtype=torch.float64)
    b_in = (
        torch.randn(experts, per_unit * ffn, generator=gen, dtype=torch.float64) if bias else None
    )
    w_out = torch.randn(experts, hidden, ffn, generator=gen, dtype=torch.float64)
    mlps = ExpertMLPs(
        w_in, b_in, w_out, g, unit_owners(g, per_unit * ffn, ffn, torch.device("cpu"))
    )
    x = torch.randn(3, hidden, generator=gen, dtype=torch.float64)
    closed = mlps.jacobians(x)
    for t in range(3):
        auto = torch.func.jacrev(lambda v: mlps.forward(v.unsqueeze(0))[0])(x[t])
        torch.testing.assert_close(closed[t], auto)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(1e-3, 1e3))
def test_probe_invariants(seed: int, scale: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    experts, hidden = 4, 6
    mlps = ExpertMLPs(
        torch.randn(experts, 5, hidden, generator=gen),
        None,
        torch.randn(experts, hidden, 5, generator=gen),
        torch.tanh,
        torch.arange(5),
    )
    x = torch.randn(40, hidden, generator=gen)
    index = torch.stack([torch.randperm(experts, generator=gen)[:2] for _ in range(40)])
    weights = torch.rand(40, 2, generator=gen)
    jac = np.array(jacobian_probe(mlps, x, index)["alignment_matrix"], dtype=float)
    assert np.allclose(jac, jac.T, atol=1e-5) and np.allclose(np.diag(jac), 1, atol=1e-5)
    assert (jac >= 0).all() and (jac <= 1 + 1e-5).all()
    pca = expert_pca_probe(x, weights, index, experts, dim=2)
    grass = np.array([[np.nan if v is None else v for v in row] for row in pca["grassmann_matrix"]])
    assert np.allclose(grass, grass.T, equal_nan=True) and np.nanmax(grass) <= 1 + 1e-9
    # cosines do not depend on the scale of the inputs or of the router rows
    rows = torch.randn(experts, hidden, generator=gen)
    base = router_coupling_probe(rows, x, weights, index)["matrix"]
    scaled = router_coupling_probe(rows * scale, x * scale, weights, index)["matrix"]
    assert np.allclose(np.array(base, dtype=float), np.array(scaled, dtype=float), atol=1e-6)
