"""Geometry statistics: hand-computed cases, no effect on embeddings, the quickstart MoE's premise."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sbabench.aggregators import resolve
from sbabench.cli import main
from sbabench.geometry.recorder import GeometryRecorder, token_stats
from sbabench.geometry.stats import effective_rank, embedding_stats, routing_stats
from sbabench.moe.base import Combination
from sbabench.run.execute import run_suite
from sbabench.suite import parse_suite


def test_token_stats_hand_computed() -> None:
    outputs = torch.tensor([[[3.0, 0.0], [0.0, 4.0]]])
    weights = torch.tensor([[0.5, 0.5]])
    sba = resolve("sba").fn(outputs, weights)
    stats = token_stats(outputs, weights, sba)
    assert stats["norms"].tolist() == [3.0, 4.0]
    assert stats["norm_cv_within_token"].item() == pytest.approx(0.5 / 3.5)
    assert stats["pairwise_cos"].item() == pytest.approx(0.0)
    assert stats["linear_collapse"].item() == pytest.approx(2.5 / 3.5)  # ||(1.5, 2)|| / (1 * 3.5)
    assert stats["collapse"].item() == pytest.approx(1.0)
    assert stats["op_angle_deg"].item() == pytest.approx(
        math.degrees(math.acos(3.5 / (math.sqrt(2) * 2.5))), abs=1e-3
    )
    assert stats["op_norm_ratio"].item() == pytest.approx(3.5 / 2.5)
    assert stats["gate_mass"].item() == pytest.approx(1.0)
    assert stats["weight_entropy"].item() == pytest.approx(1.0)


def test_routing_stats_hand_computed() -> None:
    stats = routing_stats(np.array([3.0, 1.0, 0.0, 0.0]))
    assert stats["load"] == [0.75, 0.25, 0.0, 0.0]
    assert stats["load_cv"] == pytest.approx(math.sqrt(0.09375) / 0.25)
    assert stats["load_max_over_mean_minus_1"] == pytest.approx(2.0)
    assert stats["load_entropy"] == pytest.approx(
        -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(4)
    )


def test_embedding_statistics_hand_computed() -> None:
    assert effective_rank(np.eye(5)) == pytest.approx(5.0)
    assert effective_rank(np.outer([1.0, 2.0, 3.0], [1.0, 1.0])) == pytest.approx(1.0)
    vectors = np.array([[1.0, 0.0], [0.0, 2.0]])
    stats = embedding_stats(vectors, [1.0, 3.0], linear_vectors=vectors)
    assert stats["anisotropy_mean_cosine"] == pytest.approx(0.0)
    assert stats["prenorm_norm"]["mean"] == 2.0 and stats["prenorm_norm"]["cv"] == pytest.approx(
        0.5
    )
    assert stats["cosine_to_linear"]["mean"] == pytest.approx(1.0)


def test_recorder_samples_real_tokens_only_within_budget() -> None:
    recorder = GeometryRecorder(budget_tokens=6, per_call=4)
    outputs, weights = torch.randn(10, 2, 3), torch.rand(10, 2)
    index = torch.tensor([[0, 1]] * 10)
    recorder.token_mask = torch.tensor([True] * 3 + [False] * 7)
    for _ in range(3):
        recorder.observe(Combination("layer", outputs, weights, outputs.sum(1), index, None))
    summary = recorder.layers({"layer": 4})["layer"]
    assert summary["tokens"] == 6  # 3 real tokens per call, stopped at the budget
    assert summary["routing"]["load"] == [0.5, 0.5, 0.0, 0.0]


def test_load_counts_every_real_token_past_the_sample_budget() -> None:
    recorder = GeometryRecorder(budget_tokens=2, per_call=2)
    outputs, weights = torch.randn(5, 2, 3), torch.rand(5, 2)
    # token 4 is padding; token 3's second slot is an expert-parallel sentinel (index 4 = E)
    index = torch.tensor([[0, 1], [0, 2], [0, 1], [2, 4], [3, 3]])
    recorder.token_mask = torch.tensor([True, True, True, True, False])
    for _ in range(3):
        call = Combination("layer", outputs, weights, outputs.sum(1), index, None, num_experts=4)
        recorder.observe(call)
    summary = recorder.layers({"layer": 4})["layer"]
    assert summary["tokens"] == 2  # the statistics' sample stopped at its budget ...
    load = summary["load"]  # ... the load did not: 4 real tokens x 3 calls
    assert load["tokens"] == 12
    assert load["tokens_per_expert"] == [9, 6, 6, 0]
    assert load["idle_experts"] == 1 and load["experts"] == 4
    assert load["max_over_mean"] == pytest.approx(9 / (21 / 4))
    shares = np.array([9, 6, 6]) / 21
    assert load["entropy"] == pytest.approx(float(-(shares * np.log(shares)).sum() / math.log(4)))
    assert load["cv"] == pytest.approx(float(np.std([9, 6, 6, 0]) / (21 / 4)))


def test_geometry_does_not_change_scores_and_shows_the_premise(tmp_path: Path) -> None:
    text = """\
name: geo
models:
  - {name: moe, source: upcycle}
aggregators: [linear, sba]
tasks: [LeeDocSTS]
settings: {device: cpu, SETTING}
"""
    with_geometry = run_suite(
        parse_suite(text.replace("SETTING", "geometry_tokens: 4096")), tmp_path / "on"
    )
    without = run_suite(
        parse_suite(text.replace("SETTING", "geometry_tokens: 0")), tmp_path / "off"
    )
    scores_on = {r.aggregator: r.main_score for r in with_geometry.results}
    assert scores_on == {r.aggregator: r.main_score for r in without.results}
    assert all(r.geometry is None for r in without.results)
    by_operator = {r.aggregator: r.geometry for r in with_geometry.results}
    for operator, geometry in by_operator.items():
        assert geometry is not None and len(geometry.layers) == 3
        for layer in geometry.layers.values():
            assert layer.norm_cv_within_token["mean"] < 0.1  # concentrated norms per token
            assert layer.linear_collapse_ratio["mean"] < 1.0  # linear collapses inward
            if operator == "sba":
                assert layer.collapse_ratio["mean"] == pytest.approx(1.0, abs=1e-4)
            else:
                assert layer.collapse_ratio["mean"] < 1.0
    sba_geometry = by_operator["sba"]
    assert sba_geometry is not None and sba_geometry.embeddings is not None
    cosine_to_linear = sba_geometry.embeddings.cosine_to_linear
    assert cosine_to_linear is not None and 0.5 < cosine_to_linear["mean"] < 1.0

    plots = CliRunner().invoke(
        main, ["plot", str(tmp_path / "on"), "--output", str(tmp_path / "png")]
    )
    assert plots.exit_code == 0, plots.output
    assert {p.name for p in (tmp_path / "png").iterdir()} >= {
        "geometry_moe__linear.png",
        "geometry_moe__sba.png",
    }
    shown = CliRunner().invoke(main, ["show", str(tmp_path / "on"), "--geometry"])
    assert shown.exit_code == 0 and "collapse (operator)" in shown.output


def test_cached_embeddings_still_get_geometry_from_a_bounded_sample(tmp_path: Path) -> None:
    text = """\
name: geo
models:
  - {name: moe, source: upcycle, experts: 4, layers: [1]}
aggregators: [sba]
tasks: [LeeDocSTS]
settings: {device: cpu}
geometry: {tokens: TOKENS}
"""
    first = run_suite(parse_suite(text.replace("TOKENS", "0")), tmp_path)
    assert first.results[0].geometry is None
    # every embedding is cached now; geometry needs the model to see some of the texts again
    again = run_suite(parse_suite(text.replace("TOKENS", "64")), tmp_path, force=True)
    result = again.results[0]
    assert result.main_score == first.results[0].main_score
    assert result.timing_s.texts_encoded == 0 and result.timing_s.texts_from_cache == 50
    # one batch of 32 long documents fills a 64-token sample: the other 18 are not run
    assert result.timing_s.texts_run_for_geometry_only == 32
    assert result.geometry is not None
    assert result.geometry_layers["encoder.layer.1.output.dense.combine"]["tokens"] == 64
    # the stored sample serves a forced re-run without the model
    third = run_suite(parse_suite(text.replace("TOKENS", "64")), tmp_path, force=True)
    assert third.models_loaded == 0 and third.results[0].geometry == result.geometry


def test_a_units_geometry_is_the_same_whether_its_embeddings_were_cached(tmp_path: Path) -> None:
    """The geometry-only pass over cached texts runs the batches a fresh encode runs first, so
    the sampled statistics do not depend on the cache (the load counts every token the model
    saw, which differs)."""
    import sqlite3

    text = """\
name: geo
models:
  - {name: moe, source: upcycle, experts: 4, layers: [1]}
aggregators: [sba]
tasks: [LeeDocSTS]
settings: {device: cpu}
geometry: {tokens: 64}
"""
    fresh = run_suite(parse_suite(text), tmp_path).results[0]
    assert fresh.geometry is not None and fresh.geometry.embeddings is not None
    assert fresh.geometry.embeddings.prenorm_norm is not None  # this operator's own norms
    store = sqlite3.connect(tmp_path / ".cache" / "embeddings.sqlite")
    store.execute("DELETE FROM geometry")  # as if the embeddings came from another task
    store.commit()
    store.close()
    cached = run_suite(parse_suite(text), tmp_path, force=True).results[0]
    assert cached.timing_s.texts_encoded == 0 and cached.timing_s.texts_run_for_geometry_only > 0
    assert fresh.geometry is not None and cached.geometry is not None
    for name, layer in fresh.geometry.layers.items():
        again = cached.geometry.layers[name]
        assert again.model_dump(exclude={"load"}) == layer.model_dump(exclude={"load"})


def test_a_tasks_embedding_statistics_gather_only_their_sample() -> None:
    """The statistics read the first texts asked for; only those are gathered (a 64k-text
    task's embeddings are not stacked again), and the numbers are those of all rows given."""
    from types import SimpleNamespace

    from sbabench.geometry.stats import EMBEDDING_SAMPLE
    from sbabench.run.score import _embedding_block

    rng = np.random.default_rng(0)
    keys = [("default", f"t{i}") for i in range(EMBEDDING_SAMPLE + 500)]
    table = dict(zip(keys, rng.normal(size=(len(keys), 8)).astype(np.float32), strict=True))
    gathered: list[int] = []

    def vectors(asked: list[tuple[str, str]]) -> np.ndarray:
        gathered.append(len(asked))
        return np.stack([table[key] for key in asked])

    encoder = SimpleNamespace(requested=dict.fromkeys(keys), vectors=vectors, prenorm={})
    block = _embedding_block(SimpleNamespace(aggregator=None), encoder, None)  # type: ignore[arg-type]
    assert gathered == [EMBEDDING_SAMPLE]
    assert block == embedding_stats(np.stack(list(table.values())), [])


def test_the_cosine_to_linear_needs_only_the_samples_linear_twins(tmp_path: Path) -> None:
    """An operator's unit compares its sample with the same texts under `linear`, read from
    the embedding store: present when the store has those, absent when one is missing."""
    from types import SimpleNamespace

    from sbabench.geometry.stats import EMBEDDING_SAMPLE
    from sbabench.run.embedding_store import EmbeddingStore
    from sbabench.run.score import _embedding_block

    rng = np.random.default_rng(1)
    texts = [f"t{i}" for i in range(EMBEDDING_SAMPLE + 10)]
    mine = rng.normal(size=(len(texts), 4)).astype(np.float32)
    linear = rng.normal(size=(len(texts), 4)).astype(np.float32)
    parts = SimpleNamespace(embedding_space=lambda: "sba-space")
    parts.with_operator = lambda _: SimpleNamespace(embedding_space=lambda: "linear-space")
    planned = SimpleNamespace(aggregator="sba", key_parts=parts)
    encoder = SimpleNamespace(
        requested=dict.fromkeys(("default", t) for t in texts),
        vectors=lambda keys: mine[: len(keys)],
        prenorm={},
    )
    store = EmbeddingStore(tmp_path / "e.sqlite")
    store.put("linear-space", "default", texts[1:EMBEDDING_SAMPLE], linear[1:EMBEDDING_SAMPLE])
    block = _embedding_block(planned, encoder, store)  # type: ignore[arg-type]
    assert block is not None and "cosine_to_linear" not in block  # t0 is missing
    store.put("linear-space", "default", texts[:1], linear[:1])  # the rest are never read
    block = _embedding_block(planned, encoder, store)  # type: ignore[arg-type]
    expected = embedding_stats(mine, [], linear)
    assert block is not None and block["cosine_to_linear"] == expected["cosine_to_linear"]
    store.close()


def test_stored_geometry_is_keyed_by_the_geometry_code_not_the_rest_of_scoring() -> None:
    """A change to scoring code outside geometry re-keys units but reuses the geometry stored
    with their embeddings (re-recording it would see only a sample of the texts)."""
    from types import SimpleNamespace

    from sbabench.run.keys import geometry_code_sha256
    from sbabench.run.score import _geometry_slot

    def planned(scoring: str) -> Any:
        parts = SimpleNamespace(embedding_space=lambda: "space", scoring_code_sha256=scoring)
        return SimpleNamespace(unit=SimpleNamespace(task="T"), key_parts=parts)

    slot = ("space", f"T@{geometry_code_sha256()[:16]}")
    assert _geometry_slot(planned("a")) == _geometry_slot(planned("b")) == slot
