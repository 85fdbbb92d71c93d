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
