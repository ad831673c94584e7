"""Keeping third-party logging and progress bars out of sbabench's own display."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Keep mteb/transformers/datasets logging and bars out of sbabench's own progress display."""
    import datasets
    import transformers

    names = ("mteb", "transformers", "datasets", "sentence_transformers")
    before = {n: logging.getLogger(n).level for n in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.ERROR)
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)
