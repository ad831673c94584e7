"""Suite files: valid ones expand; each kind of bad one fails with file:line, field, exit 2."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from sbabench.cli import main
from sbabench.errors import SbabenchError
from sbabench.suite import expand, load_suite, parse_suite

ROOT = Path(__file__).resolve().parents[2]
GOOD = """\
name: t
models:
  - name: moe
    source: upcycle
    experts: 4
    top_k: 2
  - name: dense
    source: dense
aggregators: [linear, {name: sba, eps: 1.0e-5, label: sba-eps5}]
tasks: [LeeDocSTS, AIABDEDuplicates]
"""


def test_quickstart_suite_is_valid() -> None:
    suite = load_suite(ROOT / "suites" / "quickstart.yaml")
    units = expand(suite)
    assert len(units) == 3 * 2 + 3  # MoE x 2 aggregators x 3 tasks + dense x 3 tasks
    assert {u.aggregator_key for u in units} == {"linear", "sba", "dense"}


def test_expansion_and_labels() -> None:
    units = expand(parse_suite(GOOD))
    assert [u.label for u in units] == [
        "moe/linear/LeeDocSTS",
        "moe/linear/AIABDEDuplicates",
        "moe/sba-eps5/LeeDocSTS",
        "moe/sba-eps5/AIABDEDuplicates",
        "dense/dense/LeeDocSTS",
        "dense/dense/AIABDEDuplicates",
    ]
    assert units[2].aggregator is not None and units[2].aggregator.options == {"eps": 1e-5}


BAD = {
    "wrong type": (
        GOOD.replace("experts: 4", "experts: four"),
        "5",
        "models[0].experts",
        "valid integer",
    ),
    "unknown key": (
        GOOD.replace("top_k: 2", "top_k: 2\n    colour: red"),
        "7",
        "models[0].colour",
        "unknown key",
    ),
    "unknown source": (GOOD.replace("source: dense", "source: onnx"), "7", "models[1]", "'onnx'"),
    "unknown aggregator": (
        GOOD.replace("[linear,", "[lineer,"),
        "9",
        "aggregators[0]",
        "unknown aggregator 'lineer'",
    ),
    "bad aggregator option": (
        GOOD.replace("eps: 1.0e-5", "eps: -3"),
        "9",
        "aggregators[1]",
        "greater than 0",
    ),
    "unknown task": (
        GOOD.replace("AIABDEDuplicates]", "NoSuchTaskXYZ]"),
        "10",
        "tasks[1]",
        "unknown task 'NoSuchTaskXYZ'",
    ),
    "missing key": (
        GOOD.replace("tasks: [LeeDocSTS, AIABDEDuplicates]\n", ""),
        "1",
        "tasks",
        "missing required key",
    ),
    "top_k > experts": (GOOD.replace("top_k: 2", "top_k: 9"), "3", "models[0]", "cannot exceed"),
    "router_tokens < experts": (
        GOOD.replace("top_k: 2", "top_k: 2\n    experts: 128\n    router_tokens: 64"),
        "3",
        "models[0]",
        "router_tokens (64) must be at least experts (128)",
    ),
    "router_tokens too many": (
        GOOD.replace("top_k: 2", "top_k: 2\n    router_tokens: 40000"),
        "7",
        "models[0].router_tokens",
        "less than or equal to 32768",
    ),
    "bad setting": (
        GOOD + "settings: {batch_size: 0}\n",
        "11",
        "settings.batch_size",
        "greater than or equal to 1",
    ),
    "bad device": (GOOD + "settings: {device: tpu}\n", "11", "settings.device", "pattern"),
    "duplicate model": (GOOD.replace("name: dense", "name: moe"), "1", "(top level)", "unique"),
    "not yaml": ("name: [unclosed\n", "2", "", "not valid YAML"),
    "empty file": ("", "1", "", "got an empty file"),
    "a list, not a mapping": ("- a\n- b\n", "1", "", "must be a mapping"),
    "bad layer index": (
        GOOD.replace("top_k: 2", "top_k: 2\n    layers: [-1]"),
        "7",
        "models[0].layers",
        "greater than or equal to 0",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_suite_exits_2_with_location(case: str, tmp_path: Path) -> None:
    text, line, field, message = BAD[case]
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    output = result.output
    assert "Traceback" not in output
    assert f"{path}:{line}:" in output
    assert field in output
    assert message in output


def test_missing_suite_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_validate_ok(tmp_path: Path) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(GOOD)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "6 unit(s)" in result.output


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).resolve().parents[2] / "suites").glob("*.yaml")),
    ids=lambda p: p.name,
)
def test_every_shipped_suite_validates(path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 0, result.output


_PATHLIKE = re.compile(
    r"(?:\.\.?/|/)?[\w.-]+(?:/[\w.-]+)+\.(?:md|yaml|yml|csv|tsv|jsonl|json|parquet|py)\b"
)


@pytest.mark.parametrize("path", sorted((ROOT / "suites").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_suites_refer_only_to_files_inside_the_project(path: Path) -> None:
    """Every file a shipped suite names (in a value or a comment) exists inside the checkout."""
    text = path.read_text()
    for named in _PATHLIKE.findall(text):
        candidates = [(path.parent / named).resolve(), (ROOT / named).resolve()]
        inside = [c for c in candidates if c.is_relative_to(ROOT) and c.exists()]
        assert inside, f"{path.name} names {named!r}, which is not a file of the project"


def test_the_suite_file_check_catches_a_reference_outside_the_project(tmp_path: Path) -> None:
    assert _PATHLIKE.findall("# see ../shared/DESIGN.md for the design") == ["../shared/DESIGN.md"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nmodels: " + "[" * 5000 + "]" * 5000 + "\n", "nests too deeply"),
        ("name: x\nmodels: " + "[" * 40 + "]" * 40 + "\n", "more than 32 levels"),
        ("name: x\n" + "# padding\n" * 120_000, "larger than 1 MiB"),
    ],
    ids=["5000 levels", "40 levels", "2 MiB"],
)
def test_huge_or_deeply_nested_suites_are_refused_with_a_message(
    tmp_path: Path, text: str, message: str
) -> None:
    suite = tmp_path / "deep.yaml"
    suite.write_text(text)
    result = CliRunner().invoke(main, ["validate", str(suite)])
    assert result.exit_code == 2 and message in result.output, result.output[-500:]
    assert "Traceback" not in result.output and f"{suite}:1:1:" in result.output


@pytest.mark.parametrize(
    ("option", "shown"),
    [
        ("routing: {top_k: most}", "(got 'most')"),
        ("routing: {top_k: 0}", "(got 0)"),
        ("token_elimination: {tilt_rate: 1.2}", "got 1.2"),
        ("drop_ratio: 2", "(got 2)"),
    ],
)
def test_a_refused_value_is_shown_once(option: str, shown: str) -> None:
    """The loader adds `(got X)` to a message that does not already say what it got."""
    with pytest.raises(SbabenchError) as caught:
        parse_suite(GOOD.replace("top_k: 2", f"top_k: 2\n    {option}"), check=False)
    (line,) = [line for line in caught.value.render().splitlines() if "models[0]" in line]
    assert line.count("got ") == 1 and shown in line, line


@pytest.mark.parametrize(
    ("where", "name"),
    [
        ("tasks", "../../../../escaped"),
        ("tasks", "a/b"),
        ("tasks", ".hidden"),
        ("tasks", "a..b"),
        ("tasks", "x" * 129),
        ("suite", "../up"),
        ("model", "m/../../x"),
        ("label", "../l"),
    ],
)
def test_a_name_that_would_leave_its_folder_is_refused_where_it_is_written(
    tmp_path: Path, where: str, name: str
) -> None:
    quoted = f"'{name}'"
    text = {
        "tasks": GOOD.replace("tasks: [LeeDocSTS, AIABDEDuplicates]", f"tasks: [{quoted}]"),
        "suite": GOOD.replace("name: t\n", f"name: {quoted}\n"),
        "model": GOOD.replace("name: moe", f"name: {quoted}"),
        "label": GOOD.replace("label: sba-eps5", f"label: {quoted}"),
    }[where]
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    line = 1 + text.splitlines().index(next(ln for ln in text.splitlines() if quoted in ln))
    assert f"{path}:{line}:" in result.output, result.output


def test_local_task_named_to_escape_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("text1,text2,score\na,b,1\n")
    text = GOOD.replace(
        "tasks: [LeeDocSTS, AIABDEDuplicates]",
        "tasks:\n  - {name: '../../../../escaped', type: sts, path: data.csv,"
        " text1: text1, text2: text2, score: score}",
    )
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert f"{path}:11:" in result.output and "tasks[0].name" in result.output
    assert "not a safe name" in result.output


def test_names_that_real_suites_use_still_pass() -> None:
    for name in ("STS22.v2", "ArguAna-PL", "nomic-embed-text-v2-moe", "minilm+moe", "T_1"):
        suite = parse_suite(GOOD.replace("name: t\n", f"name: {name}\n"), check=False)
        assert suite.name == name


def _alias_bomb() -> str:
    lines = ["a: &a [x,x,x,x,x,x,x,x,x,x]"]
    lines += [
        f"{b}: &{b} [" + ",".join([f"*{a}"] * 10) + "]"
        for a, b in zip("abcdefghi", "bcdefghij", strict=True)
    ]
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_fast_and_located(tmp_path: Path) -> None:
    import time

    path = tmp_path / "bomb.yaml"
    path.write_text(_alias_bomb())
    assert len(path.read_bytes()) <= 480
    start = time.perf_counter()
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert time.perf_counter() - start < 1.0
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert re.search(rf"{re.escape(str(path))}:\d+:\d+: the suite holds more than", result.output)


def test_an_alias_inside_its_own_value_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text("name: t\nmodels: &m [*m]\n")
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2 and "inside the value it names" in result.output
    assert f"{path}:2:" in result.output


@pytest.mark.parametrize(
    "reference", ["..mod:fn", "mod:", ":fn", "mod:fn:x", "my-mod:fn", "mod..x:fn", "mod:f n"]
)
def test_a_malformed_user_operator_is_refused_at_its_line(tmp_path: Path, reference: str) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(GOOD.replace("aggregators: [linear,", f"aggregators: ['{reference}', linear,"))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert f"{path}:9:" in result.output and "package.module:function" in result.output


def test_validate_does_not_import_a_user_operator_and_run_does(tmp_path: Path) -> None:
    module = tmp_path / "planted_op.py"
    sentinel = tmp_path / "imported"
    module.write_text(f"open({str(sentinel)!r}, 'w').close()\ndef op(o, w):\n    return o[:, 0]\n")
    path = tmp_path / "suite.yaml"
    path.write_text(GOOD.replace("aggregators: [linear,", "aggregators: ['planted_op:op', linear,"))
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        result = CliRunner().invoke(main, ["validate", str(path)])
        assert result.exit_code == 0, result.output
        assert not sentinel.exists()
        load_suite(path, import_code=True)
        assert sentinel.exists()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("planted_op", None)


def test_a_suite_file_is_read_no_further_than_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"name: t\n" + b"#" * (2 << 20))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2 and "larger than 1 MiB" in result.output


@pytest.mark.parametrize("revision", ["", "    revision: main\n", "    revision: 1066b65\n"])
def test_trust_remote_code_without_a_pinned_commit_is_refused(
    tmp_path: Path, revision: str
) -> None:
    path = tmp_path / "suite.yaml"
    model = "  - name: hub\n    source: huggingface\n    path: org/moe\n"
    path.write_text(
        GOOD.replace("models:\n", f"models:\n{model}{revision}    trust_remote_code: true\n")
    )
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    line = 7 if revision else 6
    assert f"{path}:{line}:" in result.output and "models[0].trust_remote_code" in result.output
    assert "40-hex commit" in result.output
