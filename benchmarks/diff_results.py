"""Compare two results folders number by number: main scores, every mteb metric and every
per-item prediction must be identical (used to check that a refactoring changed no score).

    python benchmarks/diff_results.py RESULTS_BEFORE RESULTS_AFTER
    python benchmarks/diff_results.py results/baseline results/quickstart-replicates --replicate 0

Reads the raw JSON, so it works across result-file schema versions. Units are matched by
suite/model/aggregator/task and replicate; `--replicate R` keeps replicate R of each side and
matches across suite names (replicate 0 of a replicated suite against the single-run suite).
Exit code 1 on any difference or any unit present on one side only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _units(root: Path, replicate: int | None = None) -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(root.rglob("*.json")):
        if path.name.endswith(".error.json") or ".cache" in path.parts:
            continue
        data = json.loads(path.read_text())
        found = data.get("replicate", 0)
        if replicate is not None and found != replicate:
            continue
        model = data["model"] if found == 0 else f"{data['model']}@r{found}"
        suite = "" if replicate is not None else f"{data['suite']}/"
        out[f"{suite}{model}/{data['aggregator']}/{data['task']}"] = data
    return out


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    found = []
    for field in ("main_score", "scores", "items", "task_type", "split", "main_score_name"):
        if a.get(field) != b.get(field):
            found.append(field)
    return found


def main(before: str, after: str, replicate: int | None = None) -> int:
    """Print one line per unit and a total; 0 when everything is identical."""
    a, b = _units(Path(before), replicate), _units(Path(after), replicate)
    bad = 0
    for label in sorted(set(a) | set(b)):
        if label not in a or label not in b:
            print(f"MISSING  {label}: only in {'after' if label in b else 'before'}")
            bad += 1
            continue
        diff = _differences(a[label], b[label])
        items = sum(
            len(s["predicted"]) + sum(map(len, s.get("runs", [])))
            for s in a[label]["items"].values()
        )
        status = "DIFFERS " + ", ".join(diff) if diff else "same"
        print(
            f"{status:8} {label}: main {a[label]['main_score']:.6f} -> {b[label]['main_score']:.6f}, {items} per-item predictions"
        )
        bad += bool(diff)
    print(f"{len(set(a) | set(b))} unit(s), {bad} with differences")
    return 1 if bad else 0


if __name__ == "__main__":
    args = sys.argv[1:]
    chosen = None
    if "--replicate" in args:
        at = args.index("--replicate")
        chosen = int(args[at + 1])
        del args[at : at + 2]
    sys.exit(main(args[0], args[1], chosen))
