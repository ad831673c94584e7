"""`history --html`: a self-contained page, checked as text and in a real headless Chromium."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from sbabench.cli import main
from tests.analysis.history.builders import commit, new_repo, sts_result, write_results
from tests.browser import REQUIRE, browser_path, screenshot, self_tested, sorted_order


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = new_repo(tmp_path_factory.mktemp("page") / "repo")
    for n in range(5):
        commit(repo, f"change {n} <b>&</b>", 1_700_000_000 + 60 * n)
        results = [sts_result(3.0 if n >= 3 else 0.0, 1), sts_result(0.0, 1, aggregator="linear")]
        results.append(sts_result(0.5, 2, aggregator="radius", task="T2"))
        folder = write_results(repo / "results", *results)
        done = CliRunner().invoke(main, ["record", str(folder), "--repo", str(repo), "--history", str(repo / "h.sqlite")])  # fmt: skip
        assert done.exit_code == 0, done.output
    out = repo / "site"
    done = CliRunner().invoke(main, ["history", "--repo", str(repo), "--history", str(repo / "h.sqlite"), "--html", str(out), "--since", "HEAD~4"])  # fmt: skip
    assert done.exit_code == 0, done.output
    return out / "index.html"


def test_the_page_is_self_contained_and_escapes_what_it_shows(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)  # nothing from the network
    assert text.count("<tr data-unit=") == 3 and text.count("<svg") == 3
    assert "change 3 &lt;b&gt;&amp;&lt;/b&gt;" in text and "<b>&</b>" not in text
    assert "DROP: m/sba/T1" in text


@pytest.mark.slow  # a real browser: seconds, and CI installs it for the slow run
def test_the_page_renders_in_chromium_without_console_errors(page: Path, tmp_path: Path) -> None:
    dom = self_tested(page, tmp_path / "profile")
    assert dom.count("<tr data-unit=") == 3
    # the self-test clicked "newest": rows ascending by the newest score
    rows = re.findall(r'<tr data-unit="([^"]+)">(?:<td[^>]*>.*?</td>){3}<td data-value="([^"]+)"', page.read_text())  # fmt: skip
    assert len(rows) == 3
    by_score = [unit for unit, _ in sorted(rows, key=lambda row: float(row[1]))]
    assert sorted_order(dom) == by_score != [unit for unit, _ in rows]
    screenshot(page, tmp_path / "profile", "history-page.png", "1000,1400")


def test_without_a_browser_the_test_skips_and_fails_where_ci_requires_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CHROME", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv(REQUIRE, raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        browser_path()
    monkeypatch.setenv(REQUIRE, "1")
    with pytest.raises(pytest.fail.Exception, match="requires it"):
        browser_path()


def test_the_markdown_report_shows_a_subject_s_html_as_text(page: Path) -> None:
    repo = page.parent.parent
    done = CliRunner().invoke(main, ["history", "--repo", str(repo), "--history", str(repo / "h.sqlite"), "--format", "markdown"])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "change 3 &lt;b&gt;&amp;&lt;/b&gt;" in done.output and "<b>" not in done.output
