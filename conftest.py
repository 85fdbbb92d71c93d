"""Loaded for every pytest run in this repository (tests/ and the notebooks run by nbmake).

Notebooks save their figures to ``Path(os.environ.get("MINILM_FIGURES", "../figures"))``.  Under pytest that is a
temporary folder, one per process (the xdist workers included), removed when the process exits: running the tests
never rewrites the committed figures.  ``notebooks/regenerate.py`` is what writes figures/.
"""

import os
import tempfile

_FIGURES = tempfile.TemporaryDirectory(prefix="minilm-figures-")
os.environ["MINILM_FIGURES"] = _FIGURES.name  # notebook kernels started by nbmake inherit it
os.environ.setdefault("MPLBACKEND", "Agg")

# The speech notebook (§6.2) needs the Free Spoken Digit Dataset, which is never committed: the shared copy beside the
# repository if there is one (handed to the notebook kernels in MINILM_FSDD_DIR), else the project's verified download
# already in $MINILM_CACHE.  With neither, the notebook and the checks that execute it are skipped, with the reason.
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

_SHARED_FSDD = Path(__file__).resolve().parent.parent / "shared" / "data" / "fsdd"
if (_SHARED_FSDD / "recordings").is_dir():
    os.environ.setdefault("MINILM_FSDD_DIR", str(_SHARED_FSDD))


def _fsdd_available() -> bool:
    if os.environ.get("MINILM_FSDD_DIR"):
        return True
    cache = Path(os.environ.get("MINILM_CACHE", Path.home() / ".cache" / "minilm"))
    return (cache / "fsdd-v1.0.10" / "recordings").is_dir()


def pytest_collection_modifyitems(config, items):
    if _fsdd_available():
        return
    skip = pytest.mark.skip(reason="the FSDD recordings are not here (no ../shared copy, nothing in $MINILM_CACHE)")
    for item in items:
        if "speech_recognition" in item.nodeid:
            item.add_marker(skip)
