"""Teacher's material in notebooks: a glossary in the opening cell, questions to predict, answers tagged solution."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GLOSSARY_HEADER = "| English | 中文 | symbol | article § |"
CHECKED = ["10_in_context_learning", "11_generation", "translation", "finetuning"]


def cells(name):
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))
    return [("".join(c["source"]), c["cell_type"], "solution" in c.get("metadata", {}).get("tags", []))
            for c in nb["cells"]]


@pytest.mark.parametrize("name", CHECKED)
def test_opening_cell_holds_the_bilingual_glossary(name):
    first, kind, _ = cells(name)[0]
    assert kind == "markdown" and GLOSSARY_HEADER in first
    rows = [line for line in first.splitlines()[first.splitlines().index(GLOSSARY_HEADER) + 2:] if line.startswith("|")]
    assert len(rows) >= 5 and all(line.count("|") == 5 for line in rows)


@pytest.mark.parametrize("name", CHECKED)
def test_each_prediction_is_answered_in_a_solution_cell(name):
    cs = cells(name)
    asks = [i for i, (src, _, sol) in enumerate(cs) if "**Predict before you run.**" in src and not sol]
    assert len(asks) >= 3
    for i in asks:  # the answer comes after the code that shows it, before the next question
        nxt = next((j for j in asks if j > i), len(cs))
        assert any(sol and kind == "markdown" for _, kind, sol in cs[i + 1:nxt]), f"{name}: cell {i} has no answer"


@pytest.mark.parametrize("name", CHECKED)
def test_try_this_is_answered(name):
    cs = cells(name)
    at = max(i for i, (src, _, _) in enumerate(cs) if "## Try this" in src)
    n_questions = len(re.findall(r"^\d+\. ", cs[at][0].split("## Try this")[1], flags=re.M))
    answers = [src for src, kind, sol in cs[at + 1:] if sol and kind == "markdown"]
    assert answers and n_questions >= 1
    assert all(f"{k}." in answers[0] for k in range(1, n_questions + 1))
