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


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A small text file of sentences from test_train's tiny grammar, shared by a module's command-line tests."""
    from test_train import synthetic_text

    path = tmp_path_factory.mktemp("data") / "grammar.txt"
    path.write_text(synthetic_text(300))
    return path
