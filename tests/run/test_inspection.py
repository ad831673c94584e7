"""`inspect` as values: the models a target names, and each one's MoE layers and configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from sbabench.errors import SbabenchError
from sbabench.models.spec import HuggingFaceModel
from sbabench.run.inspection import LayerReport, inspect_model, inspected_specs
from tests import factories


def _suite(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(factories.TINY_SUITE)
    return path


COMMIT = "1066b6599d099fbb93dfcb64f9c37a7c9e503e85"


def test_a_suite_names_every_model_or_the_one_asked_for(tmp_path: Path) -> None:
    suite = _suite(tmp_path)
    assert [m.name for m in inspected_specs(suite)] == ["moe", "dense"]
    assert [m.name for m in inspected_specs(str(suite), model_name="dense")] == ["dense"]
    with pytest.raises(SbabenchError, match="has no model named 'nope'"):
        inspected_specs(str(suite), model_name="nope")


def test_a_hub_id_or_folder_is_one_huggingface_model() -> None:
    (spec,) = inspected_specs("org/some-moe", trust_remote_code=True, revision=COMMIT)
    assert isinstance(spec, HuggingFaceModel)
    assert (spec.name, spec.path, spec.revision, spec.trust_remote_code) == (
        "inspected",
        "org/some-moe",
        COMMIT,
        True,
    )


def test_trusting_remote_code_needs_a_full_commit() -> None:
    for revision in (None, "main", "abc", COMMIT[:12], COMMIT.upper()):
        with pytest.raises(SbabenchError, match="40-hex commit") as caught:
            inspected_specs("org/some-moe", trust_remote_code=True, revision=revision)
        assert "--revision" in caught.value.render()
    (spec,) = inspected_specs("org/some-moe", revision="main")  # no remote code: any revision
    assert spec.revision == "main"


def test_the_upcycled_and_the_dense_minilm_as_reports(tmp_path: Path) -> None:
    moe_spec, dense_spec = inspected_specs(_suite(tmp_path))
    moe, dense = inspect_model(moe_spec), inspect_model(dense_spec)

    assert (dense.name, dense.model_class, dense.layers) == ("dense", "BertModel", ())
    assert dense.parameters == 22_713_216  # all-MiniLM-L6-v2
    config = dense.config
    assert (config.pooling, config.normalize, config.max_length, config.prompts) == (
        "mean",
        True,
        256,
        {},
    )
    assert config.modules == ("Transformer", "Pooling", "Normalize")

    assert (moe.name, moe.model_class) == ("moe", "BertModel")
    assert moe.layers == (
        LayerReport(
            name="encoder.layer.1.output.dense.combine",
            family="upcycled-bert",
            experts=4,
            top_k=2,
            renormalized=True,
            unavailable={},
        ),
    )
    assert moe.layers[0].probes == "all"
    # layer 1's FFN (384 -> 1536 with its bias, 1536 -> 384) becomes 4 experts sharing the
    # output bias, plus a bias-free router of 4 x 384
    assert moe.parameters == dense.parameters + 3 * (2 * 384 * 1536 + 1536) + 4 * 384


def test_probes_text_says_why_each_probe_cannot_run() -> None:
    layer = LayerReport("l", "mixtral", 8, 2, False, {"jacobian": "a norm layer", "x": "why"})
    assert layer.probes == "no jacobian: a norm layer; no x: why"
