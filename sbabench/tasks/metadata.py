"""mteb task metadata for the tasks sbabench builds itself (bundled and local)."""

from __future__ import annotations

from mteb.abstasks.task_metadata import TaskMetadata


def task_metadata(
    name: str,
    task_type: str,
    main_score: str,
    description: str,
    source: str,
    revision: str,
    languages: list[str],
    license_: str,
    reference: str,
) -> TaskMetadata:
    """Metadata of a text-to-text task with one `test` split, as mteb's task classes read it."""
    return TaskMetadata(
        name=name,
        type=task_type,
        main_score=main_score,
        description=description,
        reference=reference,
        dataset={"path": source, "revision": revision},
        category="t2t",
        modalities=["text"],
        eval_splits=["test"],
        eval_langs=languages,
        date=None,
        domains=None,
        task_subtypes=None,
        license=license_,
        annotations_creators="human-annotated",
        dialect=[],
        sample_creation="found",
        bibtex_citation="",
    )
