"""`python -m sbabench`. Python puts the current folder first on the import path; it goes last
here, before anything else is imported, so a `torch.py` or `sbabench.py` in it shadows nothing
while a user operator module in it still imports."""

import os
import sys


def _current_folder_last() -> None:
    here = os.getcwd()
    sys.path[:] = [*(entry for entry in sys.path if entry not in ("", ".", here)), here]


_current_folder_last()

from sbabench.cli import main  # noqa: E402  (after the import path is set)

main()
