"""Classroom exercises: the regions, the student copy and its grading (minilm.classroom).

Grading starts fresh interpreters, so most tests grade a few exercises with --only.
The full set is graded twice, cheaply: a fresh copy (every stub raises at once), and
the reference put back with --fast (every output compared with the reference's, no
finite differences; that every case passes its finite differences on the reference
is test_gradcheck's business).
"""

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from minilm import cli
from minilm.classroom.exercises import (
    BEGIN,
    END,
    PACKAGE,
    find_exercises,
    find_regions,
    make,
    module_files,
    restore_regions,
    select,
    student_notebook,
    student_source,
)

PRIMITIVES = ["linear_backward", "relu_backward", "tanh_backward", "sigmoid_backward", "gelu_backward",
              "softmax_backward", "log_softmax_backward", "cross_entropy_backward", "embedding_backward",
              "layernorm_backward", "dropout_backward"]


def run(capsys, *argv):
    code = cli.main(["exercise", *argv])
    return code, capsys.readouterr().out


def grades(out: str) -> dict[str, str]:
    """{exercise: status} from the report of exercise check."""
    found = re.findall(r"^(\w+)\s+(passed|wrong|not implemented|no check)\b", out, re.MULTILINE)
    return dict(found)


def replace_region(path, function: str, body: str) -> None:
    """Put ``body`` (lines at 4 spaces) into the region of ``function`` in the file at ``path``."""
    lines = path.read_text().splitlines()
    r = next(r for r in find_regions("\n".join(lines)) if r.function == function)
    lines[r.begin + 1 : r.end] = body.strip("\n").splitlines()
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def fresh_copy(tmp_path_factory):
    dest = tmp_path_factory.mktemp("student")
    make(dest)
    return dest


def reference_copy(tmp_path):
    """A copy of the package with every solution in place."""
    shutil.copytree(PACKAGE, tmp_path / "minilm", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


# ---------------------------------------------------------------- regions, names, stubs


def test_every_primitive_backward_is_an_exercise():
    names = [e.name for e in find_exercises()]
    assert set(PRIMITIVES) <= set(names)
    assert len(names) == len(set(names))


def test_unbalanced_markers_are_named():
    with pytest.raises(ValueError, match="line 2: .* never closed"):
        find_regions(f"def f():\n    {BEGIN}\n    x = 1\n")
    with pytest.raises(ValueError, match=f"line 1: {END} without"):
        find_regions(f"{END}\n")


def test_stub_raises_with_formula_section_and_shapes():
    src = module_files()["linear"].read_text()
    ex = [e for e in find_exercises() if e.name == "linear_backward"]
    student = student_source(src, ex)
    assert "dW = x2.T @ dy2" in src and "x2.T @ dy2" not in student  # the solution is gone
    assert student.count(BEGIN) == src.count(BEGIN)  # the markers stay
    ns = {"__name__": "student_linear"}
    exec(compile(student, "student_linear.py", "exec"), ns)
    y, cache = ns["linear_forward"](np.ones((2, 3)), np.ones((3, 4)), np.ones(4))
    with pytest.raises(NotImplementedError) as e:
        ns["linear_backward"](np.ones((2, 4)), cache)
    msg = str(e.value)
    for part in ["linear_backward", "§4.1", "dx = dy W^T", "minilm/linear.py", "dW (Din, Dout)", "db (Dout,)"]:
        assert part in msg, (part, msg)


def test_stubbing_then_restoring_gives_back_every_module():
    exercises = find_exercises()
    for module, path in module_files().items():
        mine = [e for e in exercises if e.module == module]
        if mine:
            src = path.read_text()
            student = student_source(src, mine)
            compile(student, str(path), "exec")
            assert student != src and restore_regions(student, src) == src, module


def test_select_by_name_module_and_prefix():
    exercises = find_exercises()
    assert [e.name for e in select(exercises, ["linear_backward"])] == ["linear_backward"]
    assert {e.name for e in select(exercises, ["softmax"])} == {"softmax_backward", "log_softmax_backward",
                                                                 "cross_entropy_backward"}
    assert [e.name for e in select(exercises, ["gelu,relu_backward"])] == ["relu_backward", "gelu_backward"]
    with pytest.raises(ValueError, match="no exercise or module named 'nope'.*linear_backward"):
        select(exercises, ["nope"])


def test_list_names_each_exercise_and_its_case(capsys):
    code, out = run(capsys, "list")
    assert code == 0
    for name in PRIMITIVES:
        assert re.search(rf"^{name}\s", out, re.MULTILINE), name
    assert re.search(r"^linear_backward\s+minilm/linear.py:\d+\s+ops/linear$", out, re.MULTILINE)


# ---------------------------------------------------------------- notebooks


def notebook(*cells):
    return {"cells": [{"cell_type": t, "metadata": m, "source": s, **({"outputs": [{"text": "42"}],
                       "execution_count": 3} if t == "code" else {})} for t, m, s in cells],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def test_student_notebook_strips_solutions_and_outputs():
    nb = notebook(("markdown", {}, "The derivation."),
                  ("code", {"tags": ["solution"]}, "dx = dy @ W.T"),
                  ("code", {}, f"def f(x):\n    {BEGIN}\n    y = 2 * x\n    {END}\n    return y"),
                  ("code", {"nbgrader": {"solution": True}}, "secret = 1"),
                  ("code", {}, "print(f(3))"))
    out = student_notebook(nb)
    cells = out["cells"]
    assert "sys.path.insert" in cells[0]["source"]  # imports the copy's package
    sources = [c["source"] for c in cells[1:]]
    assert sources[0] == "The derivation."
    assert "dy @ W.T" not in sources[1] and "NotImplementedError" in sources[1]
    assert "2 * x" not in sources[2] and BEGIN in sources[2] and "return y" in sources[2]
    assert "secret" not in sources[3]
    assert sources[4] == "print(f(3))"
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in cells if c["cell_type"] == "code")
    assert nb["cells"][1]["source"] == "dx = dy @ W.T"  # the teacher's notebook is untouched


def test_notebook_without_solutions_gets_a_note():
    out = student_notebook(notebook(("code", {}, "import minilm")))
    assert out["cells"][0]["cell_type"] == "markdown" and "Student copy" in out["cells"][0]["source"]


def test_make_writes_the_matching_notebooks_and_the_manifest(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    (nbs / "linear.ipynb").write_text(json.dumps(notebook(("code", {}, "from minilm.linear import linear_forward"))))
    (nbs / "other.ipynb").write_text(json.dumps(notebook(("code", {}, "from minilm.lstm import lstm_forward"))))
    dest = tmp_path / "hw"
    make(dest, ["linear_backward"], notebooks=nbs)
    assert sorted(p.name for p in (dest / "notebooks").iterdir()) == ["linear.ipynb"]
    assert json.loads((dest / "exercises.json").read_text())["exercises"] == ["linear_backward"]
    assert "linear_backward" in (dest / "README.md").read_text()
    changed = [m for m, p in module_files(dest / "minilm").items() if p.read_text() != module_files()[m].read_text()]
    assert changed == ["linear"]  # only the chosen exercise is stubbed
    with pytest.raises(ValueError, match="exists"):
        make(dest, ["linear_backward"], notebooks=nbs)


# ---------------------------------------------------------------- grading


def test_fresh_copy_grades_all_not_implemented(fresh_copy, capsys):
    code, out = run(capsys, "check", str(fresh_copy))
    assert code == 1
    g = grades(out)
    assert set(g) == {e.name for e in find_exercises()}
    assert set(g.values()) == {"not implemented"}, out
    assert f"0 of {len(g)} exercises passed, {len(g)} not implemented" in out


def test_students_gradcheck_reports_stubs_as_not_implemented(fresh_copy):
    """In the copy, python -m minilm gradcheck is the student's own check: a stub is a line, not a crash."""
    out = subprocess.run([sys.executable, "-m", "minilm", "gradcheck", "--only", "ops/"], cwd=fresh_copy,
                         capture_output=True, text=True)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stdout.count("not implemented") == len(re.findall(r"^ops ", out.stdout, re.MULTILINE)) >= 11
    assert "linear_backward (§4.1" in out.stdout


def test_reference_put_back_grades_all_passed(fresh_copy, tmp_path, capsys):
    shutil.copytree(fresh_copy, tmp_path, dirs_exist_ok=True)
    shutil.copytree(PACKAGE, tmp_path / "minilm", dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    code, out = run(capsys, "check", str(tmp_path), "--fast")
    g = grades(out)
    assert set(g) == {e.name for e in find_exercises()}
    assert set(g.values()) == {"passed"}, out
    assert code == 0 and f"{len(g)} of {len(g)} exercises passed (" in out


def test_planted_bug_is_reported_for_that_exercise_alone(tmp_path, capsys):
    """1.01 * dW in linear_backward: linear_backward is wrong, multi-head attention (built on it) still passes."""
    reference_copy(tmp_path)
    replace_region(tmp_path / "minilm" / "linear.py", "linear_backward", """
    dx = dy @ W.T  # (..., Din)
    dW = 1.01 * (x.reshape(-1, x.shape[-1]).T @ dy.reshape(-1, dy.shape[-1]))  # (Din, Dout)
    db = dy.reshape(-1, dy.shape[-1]).sum(axis=0) if has_bias else None""")
    report = tmp_path / "grades.json"
    code, out = run(capsys, "check", str(tmp_path), "--only", "linear", "mha_backward", "layernorm_backward",
                    "--json", str(report))
    assert code == 1
    assert grades(out) == {"linear_backward": "wrong", "mha_backward": "passed", "layernorm_backward": "passed"}
    line = next(ln for ln in out.splitlines() if ln.startswith("linear_backward"))
    err = float(re.search(r"dW: relative error (\S+); ≈ 1.01 × the numerical gradient everywhere; cosine 1.0000 "
                          r"\(gradient check ops/linear\)", line).group(1))
    assert 1e-3 < err < 1e-2  # 0.01 / 2.01
    assert "dx:" not in line and "db:" not in line
    assert "1 of 3 exercises passed, 2 wrong" not in out and "2 of 3 exercises passed, 1 wrong" in out
    data = json.loads(report.read_text())
    assert data["passed"] is False and [e["status"] for e in data["exercises"]].count("wrong") == 1
    code, out = run(capsys, "check", str(tmp_path), "--only", "linear", "mha_backward", "--fast")
    assert code == 1 and grades(out) == {"linear_backward": "wrong", "mha_backward": "passed"}
    assert re.search(r"dW: relative error \S+ against the reference; ≈ 1.01 × the reference's everywhere; "
                     r"cosine 1.0000 \(ops/linear\)", out)


def test_wrong_forward_with_consistent_backward_is_caught(tmp_path, capsys):
    """softmax along the wrong axis in forward *and* backward agree with finite differences;
    the comparison with the reference's output catches them."""
    reference_copy(tmp_path)
    path = tmp_path / "minilm" / "softmax.py"
    src, line = path.read_text(), "    y = e / e.sum(axis=-1, keepdims=True)  # (..., V)"
    assert src.count(line) == 1
    path.write_text(src.replace(line, "    y = e / (1.5 * e.sum(axis=-1, keepdims=True))  # (..., V)"))
    replace_region(path, "softmax_backward", """
    dx = y * dy - y * (dy * y).sum(axis=-1, keepdims=True) * 1.5  # (..., V)""")
    code, out = run(capsys, "check", str(tmp_path), "--only", "softmax_backward", "-v")
    assert code == 1 and grades(out) == {"softmax_backward": "wrong"}
    assert re.search(r"ok  dx: relative error \S+ \(gradient check ops/softmax\)", out)  # consistent pair
    assert re.search(r"out: relative error \S+ against the reference; ≈ 0.67 × the reference's everywhere; "
                     r"cosine 1.0000 \(ops/softmax\)", out)


def test_errors_crashes_timeouts_and_the_reference_are_wrong(tmp_path, capsys):
    reference_copy(tmp_path)
    act, lin = tmp_path / "minilm" / "activations.py", tmp_path / "minilm" / "linear.py"
    replace_region(act, "sigmoid_backward", '    raise ValueError("boom")')
    replace_region(act, "relu_backward", "    import os\n    os._exit(3)")
    replace_region(act, "tanh_backward", "    while True:\n        pass")
    replace_region(act, "gelu_backward", "    raise NotImplementedError")
    replace_region(lin, "linear_backward", f"""
    import importlib.util
    spec = importlib.util.spec_from_file_location("ref", {str(PACKAGE / "linear.py")!r})
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    dx, dW, db = ref.linear_backward(dy, cache)""")
    replace_region(tmp_path / "minilm" / "softmax.py", "softmax_backward", """
    import minilm.softmax  # the student's own module: the reference is shadowed
    dx = minilm.softmax.softmax_backward(dy, cache)""")
    code, out = run(capsys, "check", str(tmp_path), "--only", "activations", "linear", "softmax_backward",
                    "dropout", "--timeout", "4")
    assert code == 1
    assert grades(out) == {"relu_backward": "wrong", "tanh_backward": "wrong", "sigmoid_backward": "wrong",
                           "gelu_backward": "not implemented", "dropout_backward": "passed",
                           "linear_backward": "wrong", "softmax_backward": "wrong"}, out
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln and ln.split()[0] in grades(out)}
    assert re.search(r"ValueError: boom \(at minilm/activations.py:\d+ in sigmoid_backward", lines["sigmoid_backward"])
    assert "stopped (exit status 3)" in lines["relu_backward"]
    assert "timed out after 4 s" in lines["tanh_backward"]
    assert re.search(r"reads the reference package: .*minilm/linear\.py", lines["linear_backward"])
    assert "RecursionError" in lines["softmax_backward"]


def test_only_grades_the_manifest_or_the_named_exercises(tmp_path, capsys):
    make(tmp_path, ["relu_backward"])
    code, out = run(capsys, "check", str(tmp_path))
    assert code == 1 and grades(out) == {"relu_backward": "not implemented"}
    code, out = run(capsys, "check", str(tmp_path), "--only", "tanh_backward")
    assert code == 0 and grades(out) == {"tanh_backward": "passed"}


def test_bad_use_exits_2(tmp_path, capsys):
    code, out = run(capsys, "check", str(tmp_path))
    assert code == 2 and "holds no package minilm/" in out
    reference_copy(tmp_path)
    code, out = run(capsys, "check", str(tmp_path), "--only", "nope")
    assert code == 2 and "no exercise or module named 'nope'" in out
    code, out = run(capsys, "make", str(tmp_path))
    assert code == 2 and "exists" in out
