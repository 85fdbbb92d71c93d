"""The notebooks as files: where they write figures, and the font their Chinese labels use."""

import json
import os
import re
import warnings
from pathlib import Path

import pytest

from minilm import plotting

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
FIGURES_LINE = 'FIGURES = Path(os.environ.get("MINILM_FIGURES", "../figures"))'


def code(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 12


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_saves_figures_under_minilm_figures(path):
    src = code(path)
    saves = re.findall(r"savefig\(([^,)]+)", src)
    if not saves:
        return
    assert FIGURES_LINE in src
    for target in saves:
        assert target.strip().startswith("FIGURES /"), f"{path.name}: savefig({target}) does not go through FIGURES"
    assert "../figures/" not in src.replace(FIGURES_LINE, "")


def test_pytest_points_figures_outside_the_repository():
    figures = Path(os.environ["MINILM_FIGURES"]).resolve()
    assert figures.is_dir()
    assert ROOT not in figures.parents and figures != ROOT / "figures"


def test_cjk_font_falls_back_quietly_without_mplfonts(monkeypatch):
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    monkeypatch.setattr(plotting, "mplfonts_path", lambda: None)
    monkeypatch.setattr(font_manager.fontManager, "ttflist", [])
    before = list(plt.rcParams["font.sans-serif"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert plotting.use_cjk_font() is None
    assert plt.rcParams["font.sans-serif"] == before


@pytest.mark.skipif(plotting.mplfonts_path() is None, reason="the optional mplfonts package is not installed")
def test_cjk_font_from_mplfonts_draws_chinese_without_warnings(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with matplotlib.rc_context():
        name = plotting.use_cjk_font()
        assert name == "Noto Sans CJK SC"
        fig, ax = plt.subplots()
        ax.set_title("三千零四十二")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a missing glyph would warn
            fig.savefig(tmp_path / "zh.png")
        plt.close(fig)
