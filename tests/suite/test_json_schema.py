"""The suite files' JSON Schema: generated, committed, described, and true to the suites."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from sbabench.cli import main
from sbabench.suite.schema import json_schema

SUITES = Path(__file__).resolve().parents[2] / "suites"
SHIPPED = sorted(SUITES.glob("*.yaml"))
HEADER = "# yaml-language-server: $schema=schema.json"


def _validator() -> jsonschema.protocols.Validator:
    schema = json_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_the_committed_schema_is_the_generated_one() -> None:
    committed = json.loads((SUITES / "schema.json").read_text())
    assert committed == json_schema(), "run `sbabench schema --output suites/schema.json`"


def test_sbabench_schema_prints_it() -> None:
    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0 and json.loads(result.output) == json_schema()


def test_schema_to_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["schema", "--output", str(tmp_path / "no" / "s.json")])
    assert result.exit_code == 2 and "does not exist" in result.output
    assert not (tmp_path / "no").exists()


def _properties(node: Any, where: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every (path, property schema) of a schema, however deeply nested."""
    found = []
    if isinstance(node, dict):
        for name, prop in node.get("properties", {}).items():
            found.append((f"{where}.{name}", prop))
        for key, value in node.items():
            found.extend(_properties(value, f"{where}/{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(_properties(value, f"{where}[{i}]"))
    return found


def test_every_field_has_a_description() -> None:
    properties = _properties(json_schema())
    assert len(properties) > 50
    undescribed = [where for where, prop in properties if not prop.get("description")]
    assert not undescribed


@pytest.mark.parametrize("suite", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_suite_names_the_schema_and_passes_it(suite: Path) -> None:
    text = suite.read_text()
    assert text.splitlines()[0] == HEADER
    _validator().validate(yaml.safe_load(text))


@pytest.mark.parametrize(
    "change",
    [
        {"sttings": {}},  # a misspelt key
        {"settings": {"dtype": "float64"}},
        {"geometry": {"probes": ["no-such-probe"]}},
        {"geometry": {"subspace_dim": 0}},  # a probe's own setting, bounded
        {"models": [{"name": "m", "source": "upcycle", "experts": 1}]},
        {"models": [{"name": "m", "source": "nowhere"}]},
        {"models": [{"name": "m", "source": "upcycle", "routing": {"top_k": 0}}]},
        {"models": [{"name": "m", "source": "upcycle", "routing": {"top_k": "most"}}]},
        {"train": {"router": "loss-free", "bias_rate": -0.001}},
        {"tasks": [{"name": "X", "path": "x.csv", "type": "sts", "colour": "red"}]},
    ],
)
def test_the_schema_refuses_what_sbabench_refuses(change: dict[str, Any]) -> None:
    suite = yaml.safe_load((SUITES / "quickstart.yaml").read_text())
    _validator().validate(suite)
    with pytest.raises(jsonschema.ValidationError):
        _validator().validate({**suite, **change})


def test_short_forms_and_inline_options_pass() -> None:
    suite = {
        "name": "s",
        "models": [{"name": "m", "source": "upcycle"}],
        "aggregators": ["linear", {"name": "sba", "label": "sba-2", "iterations": 2}],
        "tasks": [
            "LeeDocSTS",
            {
                "name": "mine",
                "path": "a.csv",
                "type": "sts",
                "text1": "a",
                "text2": "b",
                "score": "s",
            },
        ],
    }
    _validator().validate(suite)
