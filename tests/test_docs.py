"""The docs site and the README: generated pages match their source, every page is in the nav,
every link in the README resolves, and every sbabench command the docs show exists with its
options. (`make docs`, part of `make test`, builds the site with `mkdocs build --strict`, which
checks links and anchors between pages.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from sbabench.suite.reference import schema_markdown, type_text
from tests.test_ci_workflow import _check, _sbabench_calls

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference" / "suite.md"
PAGES = sorted([*DOCS.rglob("*.md"), ROOT / "README.md"])


def _nav_files(nav: list) -> list[str]:
    files = []
    for entry in nav:
        for value in entry.values() if isinstance(entry, dict) else [entry]:
            files += _nav_files(value) if isinstance(value, list) else [value]
    return files


def _code_blocks(text: str, languages: tuple[str, ...] = ("bash", "sh", "console")) -> list[str]:
    pattern = r"^```(\w*)\n(.*?)^```"
    return [body for lang, body in re.findall(pattern, text, re.M | re.S) if lang in languages]


def test_the_suite_reference_page_is_what_the_models_generate() -> None:
    assert REFERENCE.read_text(encoding="utf-8") == schema_markdown(), (
        "docs/reference/suite.md is stale: run "
        "`.venv/bin/python -m sbabench.suite.reference > docs/reference/suite.md`"
    )


def test_the_reference_names_every_key_of_every_block() -> None:
    page = REFERENCE.read_text(encoding="utf-8")
    for key in ("replicates", "router_tokens", "token_elimination", "embedding_cache", "workers"):
        assert f"| `{key}` |" in page
    # and a block a key refers to has a section its link lands on
    assert "[GeometrySpec](#geometryspec)" in page and "\n## GeometrySpec\n" in page


@pytest.mark.parametrize(
    ("node", "text"),
    [
        ({"type": "integer", "minimum": 1, "maximum": 1000}, "integer (>= 1, <= 1000)"),
        ({"$ref": "#/$defs/Settings"}, "[Settings](#settings)"),
        ({"anyOf": [{"type": "string"}, {"type": "null"}]}, "string or null"),
        ({"enum": ["float32", "off"]}, "`float32` \\| `off`"),
        ({"type": "array", "items": {"const": "x"}, "minItems": 1}, "list of `x` (items >= 1)"),
        ({"type": "object", "additionalProperties": {"type": "number"}}, "mapping of number"),
    ],
)
def test_type_text(node: dict, text: str) -> None:
    assert type_text(node) == text


def test_every_docs_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = set(_nav_files(config["nav"]))
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert nav == pages, f"only in nav: {nav - pages}; not in nav: {pages - nav}"


def test_every_relative_link_of_the_readme_resolves() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if "://" not in link and not link.startswith("mailto:")]
    assert local, "the README links nowhere"
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_the_readme_stays_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 200, f"README.md has {lines} lines: move detail to docs/"


def _shown_calls(page: Path) -> list[list[str]]:
    """The sbabench command lines of a page's shell code blocks, as argument lists."""
    lines = [
        line.strip().removeprefix("$ ")
        for block in _code_blocks(page.read_text(encoding="utf-8"))
        for line in block.replace("\\\n", " ").splitlines()
        if line.strip().startswith(("sbabench ", ".venv/bin/sbabench ", "$ sbabench "))
    ]
    return _sbabench_calls(lines)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_sbabench_command_shown_exists_with_its_options(page: Path) -> None:
    for args in _shown_calls(page):
        _check(args)


def test_the_docs_show_commands_at_all() -> None:
    """The check above is not vacuous: the pages show many commands, of most subcommands."""
    calls = [args for page in PAGES for args in _shown_calls(page)]
    assert len(calls) >= 15
    assert {"run", "show", "compare", "validate", "inspect"} <= {args[0] for args in calls}


def test_make_test_builds_the_docs_strictly_and_ci_publishes_them() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test:.*\bdocs\b", makefile, re.M)
    recipe = re.search(r"^docs:.*\n\t(.*)$", makefile, re.M)
    assert recipe and "mkdocs build --strict" in recipe.group(1)
    assert yaml.safe_load((ROOT / "mkdocs.yml").read_text())["strict"] is True
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    steps = [step for job in workflow["jobs"].values() for step in job.get("steps", [])]
    assert any("mkdocs build --strict" in step.get("run", "") for step in steps)
    assert any("upload-pages-artifact" in step.get("uses", "") for step in steps)
