"""Replicates in suites: schema, expansion, seeds, keys, labels and paths."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sbabench.aggregators import resolve
from sbabench.cli import main
from sbabench.errors import SuiteError
from sbabench.run.keys import unit_key_parts
from sbabench.run.plan import plan_suite
from sbabench.suite import expand, parse_suite
from sbabench.suite.replicates import derive_seed
from tests.factories import TINY_SUITE

TRAINED = TINY_SUITE + "train: {steps: 2, batch_size: 2, seed: 5}\n"


def test_replicates_expand_with_derived_seeds_and_labels() -> None:
    suite = parse_suite(TRAINED + "replicates: 3\n", check=False)
    units = expand(suite)
    moe = [u for u in units if u.model.name == "moe"]
    assert [u.replicate for u in moe] == [0, 0, 1, 1, 2, 2]
    assert moe[0].label == "moe/linear/LeeDocSTS" and moe[2].label == "moe@r1/linear/LeeDocSTS"
    assert moe[0].model.seed == 0 and moe[0].train.seed == 5 and moe[0].seed == 0
    assert moe[2].model.seed == derive_seed(0, 1) != 0
    assert moe[2].train.seed == derive_seed(5, 1) != 5 and moe[2].seed == derive_seed(0, 1)
    assert moe[2].model.seed == moe[3].model.seed  # the operators of a replicate share seeds
    assert len({u.model.seed for u in moe}) == 3
    dense = [u for u in units if u.model.name == "dense"]
    assert len(dense) == 3  # trained: random, so replicated too


def test_a_model_without_randomness_runs_once_with_a_located_note() -> None:
    suite = parse_suite(
        TINY_SUITE.replace("source: dense", "source: dense\n    replicates: 4"),
        "s.yaml",
        check=False,
    )
    assert [u.label for u in expand(suite) if u.model.name == "dense"] == ["dense/dense/LeeDocSTS"]
    (note,) = suite.notes
    assert note.startswith("s.yaml:10:") and "runs once, not 4 times" in note


def test_a_models_own_count_wins() -> None:
    text = (
        TINY_SUITE.replace("router: random", "router: random\n    replicates: 2")
        + "replicates: 5\n"
    )
    suite = parse_suite(text, check=False)
    assert len([u for u in expand(suite) if u.model.name == "moe"]) == 4


@pytest.mark.parametrize("value", ["0", "2.5", "'3'", "true", "-1"])
def test_bad_replicate_counts_are_located_errors(value: str) -> None:
    with pytest.raises(SuiteError) as caught:
        parse_suite(TINY_SUITE + f"replicates: {value}\n", "s.yaml", check=False)
    assert "s.yaml:13:13: replicates: how many times a model is rebuilt" in str(caught.value)


def test_validate_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY_SUITE + "replicates: 0\n")
    result = CliRunner().invoke(main, ["validate", str(bad)])
    assert result.exit_code == 2 and "replicates" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_keys_and_paths_of_replicates(tmp_path: Path) -> None:
    plain = parse_suite(TINY_SUITE, check=False)
    replicated = parse_suite(TINY_SUITE + "replicates: 2\n", check=False)
    linear = resolve("linear")
    keys = [unit_key_parts(replicated, u, linear) for u in expand(replicated)[:4:2]]
    assert keys[0] == unit_key_parts(plain, expand(plain)[0], linear)  # replicate 0 unchanged
    assert "replicate" not in keys[0].model_dump() and keys[1].replicate == 1
    assert keys[0].digest != keys[1].digest
    assert keys[0].embedding_space() != keys[1].embedding_space()
    plan = plan_suite(replicated, tmp_path)
    paths = {p.label: p.path.relative_to(tmp_path).as_posix() for p in plan.todo}
    assert paths["moe@r1/sba/LeeDocSTS"] == "tiny/moe@r1/sba/LeeDocSTS.json"
    assert paths["moe/sba/LeeDocSTS"] == "tiny/moe/sba/LeeDocSTS.json"
    only = plan_suite(replicated, tmp_path, only="*@r1/*")
    assert [p.label for p in only.todo] == ["moe@r1/linear/LeeDocSTS", "moe@r1/sba/LeeDocSTS"]
