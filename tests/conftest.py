import os

# The suite runs on two workers (pytest -n 2), one per core: one BLAS thread each,
# set before NumPy loads (notebook kernels and child processes inherit it).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# notebooks run by the suite save their figures here, not into the repository's figures/
os.environ.setdefault("MINILM_FIGURES", __import__("tempfile").mkdtemp(prefix="minilm-figures-"))

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

SHARED_SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
