"""The notebooks as files: where they write figures, and the font their Chinese labels use."""

import importlib.util
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


# --- the glossary tables and the answer keys ---------------------------------------------------------------------

_spec = importlib.util.spec_from_file_location("regenerate", ROOT / "notebooks" / "regenerate.py")
regenerate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(regenerate)

# notebooks whose opening glossary and answer keys are in place (the others are skipped until they have them)
WITH_ANSWER_KEYS = {"01_attention", "02_multihead_attention", "03_positional_encoding", "04_transformer_lm",
                    "05_objectives", "06_ngram_mlp", "07_lstm", "08_perplexity", "09_comparing_models",
                    "10_in_context_learning", "11_generation", "translation", "finetuning",
                    "speech_recognition", "tokenization_and_gpt2"}


def cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def is_solution(cell):
    return "solution" in cell["metadata"].get("tags", [])


def test_glossary_page_is_in_sync_with_the_notebooks():
    page = (ROOT / "notebooks" / "GLOSSARY.md").read_text(encoding="utf-8")
    assert page == regenerate.glossary_text(), "run: python notebooks/regenerate.py --glossary"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_glossary_table_opens_the_notebook(path):
    title, rows = regenerate.title_and_glossary(path)
    if not rows and path.stem not in WITH_ANSWER_KEYS:
        pytest.skip("no glossary table yet")
    assert rows, f"{path.name}: the opening cell has no '{regenerate.GLOSSARY_HEADER}' table"
    for row in rows:
        assert len(re.findall(r"(?<!\\)\|", row)) == 5, f"{path.name}: a glossary row needs 4 columns: {row}"
    later = [c for c in cells(path)[1:] if regenerate.GLOSSARY_HEADER in "".join(c["source"])]
    assert not later, f"{path.name}: the glossary table belongs in the opening cell"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_questions_have_answers_in_solution_cells(path):
    if path.stem not in WITH_ANSWER_KEYS:
        pytest.skip("answer keys not written yet")
    cs = cells(path)
    predicts = [i for i, c in enumerate(cs) if "**Predict before you run.**" in "".join(c["source"])]
    assert len(predicts) >= 3, f"{path.name}: {len(predicts)} 'predict before you run' questions, want at least 3"
    for i in predicts:
        assert not is_solution(cs[i]), f"{path.name}: the question itself must stay in the student copy"
        assert is_solution(cs[i + 1]), f"{path.name}: the question in cell {i} is not followed by a solution cell"
    try_this = [i for i, c in enumerate(cs) if "## Try this" in "".join(c["source"])]
    assert try_this, f"{path.name}: no 'Try this' section"
    answers = [c for c in cs[try_this[-1] + 1:] if is_solution(c) and 'Answers to "Try this"' in "".join(c["source"])]
    assert answers, f"{path.name}: the 'Try this' questions have no solution cell after them"


def test_hand_written_attention_gradients_are_a_solution_cell():
    # the cell that writes dS and dQ out by hand would hand out the attention_backward exercise
    cs = cells(ROOT / "notebooks" / "01_attention.ipynb")
    hand = [c for c in cs if c["cell_type"] == "code" and "dS = Pm * (dP" in "".join(c["source"])]
    assert hand and all(is_solution(c) for c in hand)
