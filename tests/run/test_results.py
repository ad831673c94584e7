"""Result files: typed blocks, schema versions, migration of older files, integrity checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sbabench.digests import key_digest
from sbabench.errors import StorageError
from sbabench.run.results import (
    SCHEMA_VERSION,
    GeometryBlock,
    UnitResult,
    load_result,
    load_results,
    save_result,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
V1_MOE = FIXTURES / "result_v1_minilm-moe_sba_LeeDocSTS.json"
V1_DENSE = FIXTURES / "result_v1_minilm_dense_MiniNewsgroupsClustering.json"


def test_a_version_1_file_loads_migrated_with_every_block_typed() -> None:
    raw = json.loads(V1_MOE.read_text())
    assert raw["schema_version"] == 1
    result = load_result(V1_MOE)
    assert result is not None and result.schema_version == SCHEMA_VERSION
    assert result.main_score == raw["main_score"]
    assert result.items["default"].predicted == raw["items"]["default"]["predicted"]
    assert result.key_parts.aggregator is not None
    assert result.key_parts.aggregator.name == "sba"
    assert (
        result.key_parts.aggregator.code_sha256 == raw["key_parts"]["aggregator"]["source_sha256"]
    )
    assert result.key_parts.model.code_sha256 == raw["key_parts"]["model"]["upcycle_code_sha256"]
    assert result.key_parts.task.split == "test"
    assert isinstance(result.geometry, GeometryBlock) and len(result.geometry.layers) == 3
    layer = next(iter(result.geometry.layers.values()))
    assert layer.tokens > 0 and 0 < layer.norm_cv_within_token["mean"] < 1
    assert result.timing_s.texts_encoded == int(raw["timing_s"]["texts_encoded"])
    assert result.provenance.versions["mteb"] == raw["provenance"]["versions"]["mteb"]
    # the stored key stays the version-1 digest: a run sees it as stale and recomputes it
    assert result.key == raw["key"] != result.key_parts.digest

    dense = load_result(V1_DENSE)
    assert dense is not None and dense.key_parts.aggregator is None
    assert dense.geometry is not None and dense.geometry.layers == {}  # dense: embeddings only
    assert dense.geometry.embeddings is not None and dense.geometry.embeddings.texts > 0
    assert dense.items["default"].kind == "clusters" and len(dense.items["default"].runs) == 10


def test_a_migrated_file_saves_as_the_current_version(tmp_path: Path) -> None:
    result = load_result(V1_MOE)
    assert result is not None
    # a current file's key is the digest of its (typed) key parts
    current = result.model_copy(update={"key": result.key_parts.digest})
    path = tmp_path / "r.json"
    save_result(path, current)
    written = json.loads(path.read_text())
    assert written["schema_version"] == SCHEMA_VERSION
    assert written["key"] == key_digest(written["key_parts"])
    again = load_result(path)
    assert again is not None and again.model_dump() == current.model_dump()


def test_per_item_arrays_are_written_compact_and_read_back(tmp_path: Path) -> None:
    """The blocks stay indented for reading; the per-item arrays take one line, not one line
    per number (a 16,000-item clustering result was 2.8 MB)."""
    from sbabench.tasks.items import ItemScores
    from tests import factories

    runs = [[float(i % 7) for i in range(5000)] for _ in range(10)]
    items = {"default": ItemScores(kind="clusters", gold=runs[0], predicted=runs[1], runs=runs)}
    result = factories.result("sba", items, 0.5)
    path = tmp_path / "r.json"
    save_result(path, result)
    text = path.read_text()
    assert len(text.splitlines()) < 100 and '\n  "suite": "s",\n' in text
    assert len(text) < 60 * 5000 * 4
    again = load_result(path)
    assert again is not None and again.model_dump() == result.model_dump()


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.update(key="0" * 64),  # altered key
        lambda d: d["key_parts"]["task"].update(split="train"),  # altered parts
        lambda d: d.update(main_score="high"),  # not a number
        lambda d: d.pop("items") and d.pop("timing_s"),  # a block missing
    ],
)
def test_damaged_or_foreign_files_are_not_results(tmp_path: Path, damage: object) -> None:
    data = json.loads(V1_MOE.read_text())
    damage(data)  # type: ignore[operator]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    assert load_result(path) is None


def test_a_file_from_a_newer_sbabench_is_refused_by_name_not_skipped(tmp_path: Path) -> None:
    data = json.loads(V1_MOE.read_text())
    data["schema_version"] = SCHEMA_VERSION + 1
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    newer = f"schema {SCHEMA_VERSION + 1} > {SCHEMA_VERSION}"
    with pytest.raises(StorageError, match=f"^{path}: written by a newer sbabench \\({newer}\\)"):
        load_result(path)
    with pytest.raises(StorageError, match="upgrade, or --results elsewhere"):
        load_results(tmp_path)


def test_truncated_and_non_json_files_are_skipped(tmp_path: Path) -> None:
    text = V1_MOE.read_text()
    (tmp_path / "a.json").write_text(text[: len(text) // 3])
    (tmp_path / "b.json").write_text("[1, 2]")
    (tmp_path / "c.json").write_text(text)
    (tmp_path / "c.error.json").write_text("{}")
    found = load_results(tmp_path)
    assert [r.task for r in found] == ["LeeDocSTS"]
    assert isinstance(found[0], UnitResult)
