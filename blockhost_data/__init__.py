"""Files the code reads at run time that are not Python: contract artifacts, cloud-init templates.

``artifacts`` and ``templates`` here are links to ``contracts/artifacts`` and
``cloud-init/templates``, which stay where the SPEC puts them; a wheel carries copies of their
files, so an installed package finds them through ``importlib.resources`` with no source tree.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["packaged_dir"]


def packaged_dir(name: str) -> Path:
    """The real path of this package's folder ``name`` (``artifacts`` or ``templates``)."""
    folder = files(__name__).joinpath(name)
    if not isinstance(folder, Path):
        raise RuntimeError(f"blockhost_data must be installed as plain files, not {folder!r}")
    return folder.resolve()
