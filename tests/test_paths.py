"""Names that become paths, and paths kept under their folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from sbabench.errors import SbabenchError
from sbabench.paths import confined, name_problem


@pytest.mark.parametrize(
    "name", ["LeeDocSTS", "STS22.v2", "ArguAna-PL", "minilm+moe", "T_1", "a" * 128]
)
def test_names_real_suites_use_are_safe(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize(
    "name",
    ["", "..", "../x", "a/b", "/abs", ".hidden", "a..b", "a\0b", "naïve", "a b", "a" * 129,
     "-x", "x\n"],
)  # fmt: skip
def test_names_that_could_leave_a_folder_are_not(name: str) -> None:
    assert name_problem(name) is not None


def test_confined_refuses_a_path_that_resolves_outside(tmp_path: Path) -> None:
    root = tmp_path / "results"
    (root / "s").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    assert confined(root, "s", "m", "t.json") == root / "s" / "m" / "t.json"
    (root / "s" / "m").symlink_to(outside)
    with pytest.raises(SbabenchError, match="symbolic link") as caught:  # a linked folder
        confined(root, "s", "m", "t.json")
    assert str(root / "s" / "m") in caught.value.render()
    with pytest.raises(SbabenchError, match="outside"):
        confined(root, "..", "outside", "t.json")


def test_confined_refuses_a_link_even_inside(tmp_path: Path) -> None:
    (tmp_path / "real.json").write_text("{}")
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    with pytest.raises(SbabenchError, match="symbolic link"):
        confined(tmp_path, "link.json")


def test_a_root_that_is_itself_a_link_is_fine(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "results").symlink_to(tmp_path / "real")
    assert confined(tmp_path / "results", "s", "x.json") == tmp_path / "results" / "s" / "x.json"


def test_a_linked_folder_inside_cannot_map_two_names_to_one_file(tmp_path: Path) -> None:
    root = tmp_path / "results"
    (root / "s" / "m").mkdir(parents=True)
    (root / "s" / "m2").symlink_to(root / "s" / "m")
    assert confined(root, "s", "m", "sba", "t.json")
    with pytest.raises(SbabenchError, match="symbolic link"):
        confined(root, "s", "m2", "sba", "t.json")
