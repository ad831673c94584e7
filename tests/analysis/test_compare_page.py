"""`compare --format html`: a self-contained page of one comparison, checked as text and in a
real headless Chromium (sorting by a column, no console errors, a screenshot)."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats as sps

from sbabench.analysis.html import Cell, sort_value
from sbabench.cli import main
from sbabench.run.results import UnitResult, result_path, save_result
from sbabench.tasks.items import ItemScores
from tests import factories
from tests.browser import screenshot, self_tested, sorted_order

RNG = np.random.default_rng(3)
GOLD = RNG.random(400)


def _result(aggregator: str, noise: float, task: str) -> UnitResult:
    predicted = GOLD + noise * np.random.default_rng(len(aggregator) + len(task)).normal(0, 1, 400)
    items = {"default": ItemScores(kind="sts", gold=GOLD.tolist(), predicted=predicted.tolist())}
    score = float(sps.spearmanr(GOLD, predicted).statistic)
    return factories.result(aggregator, items, score, task=task)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compare-page")
    results = [
        _result(aggregator, noise, task)
        for task in ("T1", "T2")
        for aggregator, noise in (("linear", 0.3), ("sba", 1.5), ("radius", 0.3))
    ]
    for r in results:
        save_result(result_path(root / "r", r.suite, r.model, r.aggregator, r.task), r)
    out = root / "out" / "compare.html"  # its folder is created
    done = CliRunner().invoke(
        main, ["compare", str(root / "r"), "--format", "html", "--output", str(out), "--fail-on-regression"]
    )  # fmt: skip
    assert done.exit_code == 1, done.output  # sba is much worse: the gate fails, and says so
    assert "REGRESSION" in done.output
    return out


def test_the_page_holds_every_row_its_verdict_and_nothing_from_the_network(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)
    units = re.findall(r'<tr data-unit="([^"]+)">', text)
    # six rows (two baselines, two candidates on two tasks) and the across-task summaries
    assert {u for u in units if u.count("/") == 2} == {
        f"m/{a}/{t}" for a in ("linear", "sba", "radius") for t in ("T1", "T2")
    }
    assert '<p class="verdict failed">' in text and "REGRESSION" in text
    assert text.count("<circle") == 4  # the forest chart: one point per tested row
    regression = re.search(r'<tr data-unit="m/sba/T1">(.*?)</tr>', text)
    assert regression is not None and 'class="down"' in regression.group(1)


def test_cells_escape_their_text_and_sort_by_their_number() -> None:
    cell = Cell('<b>"x"</b> & y').html()
    assert "<b>" not in cell and "&lt;b&gt;&quot;x&quot;&lt;/b&gt; &amp; y" in cell
    assert sort_value("\u22120.0259 [\u22120.0355, \u22120.0164]") == "-0.0259"
    assert sort_value("1.8e-06") == "1.8e-06" and sort_value("m/sba") == "m/sba"


def test_without_output_the_page_goes_to_stdout_and_the_verdict_to_stderr(page: Path) -> None:
    folder = page.parent.parent / "r"
    done = CliRunner().invoke(main, ["compare", str(folder), "--format", "html"])
    assert done.exit_code == 0
    assert done.stdout.startswith("<!DOCTYPE html>") and done.stdout.rstrip().endswith("</html>")
    verdict = done.stderr.strip()
    assert verdict.startswith(("PASS", "NO REGRESSION", "REGRESSION")), done.stderr
    # a regression is shown as one (red) even where the gate is not asked to fail on it
    assert f'<p class="verdict failed">{html.escape(verdict)}</p>' in done.stdout


@pytest.mark.slow  # a real browser: seconds, and CI installs it for the slow run
def test_the_compare_page_renders_and_sorts_in_chromium(page: Path, tmp_path: Path) -> None:
    dom = self_tested(page, tmp_path / "profile")
    # each row's score cell (the fifth): the self-test clicked "score", so rows ascend by it
    rows = re.findall(r'<tr data-unit="([^"]+/T[12])">(?:<td[^>]*>.*?</td>){4}<td data-value="([^"]+)"', page.read_text())  # fmt: skip
    assert len(rows) == 6
    expected = [unit for unit, _ in sorted(rows, key=lambda row: float(row[1]))]
    assert sorted_order(dom) == expected != [unit for unit, _ in rows]
    screenshot(page, tmp_path / "profile", "compare-page.png", "1200,1000")
