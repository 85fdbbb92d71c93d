"""What a student meets: the self-check of a copy, feedback that localises a mistake (the same words from
the self-check and the grader), dtypes, hints, leaks, notebooks that run to the end with stubs, answer keys.

Planted mistakes are run through minilm.gradcheck in-process on the reference's forward passes, except
where the point is the copy or the grader (those start a fresh interpreter, as a student or teacher does).
"""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minilm import cli
from minilm.attention import attention_backward, attention_forward
from minilm.cases import REGISTRY, Case, all_cases
from minilm.classroom.exercises import (
    BEGIN,
    MANIFEST,
    PACKAGE,
    answer_lines,
    find_exercises,
    find_regions,
    hint,
    make,
    module_files,
    normalised,
    student_notebook,
    teacher_notebook,
)
from minilm.classroom.selfcheck import refuse_other_package
from minilm.gradcheck import check_pair, describe_difference, recording
from minilm.layernorm import layernorm_forward
from minilm.softmax import cross_entropy_forward, softmax_backward

ROOT = PACKAGE.parent
HW = ["attention_backward", "layernorm_backward", "lstm_step_backward", "cross_entropy_backward"]


def put(path: Path, function: str, body: str) -> None:
    """Write ``body`` (lines at 4 spaces) into the region of ``function`` in the file at ``path``."""
    lines = path.read_text().splitlines()
    r = next(r for r in find_regions("\n".join(lines)) if r.function == function)
    lines[r.begin + 1 : r.end] = body.strip("\n").splitlines()
    path.write_text("\n".join(lines) + "\n")


def selfcheck(cwd: Path, *args: str, command=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run([*(command or [sys.executable, "-m", "minilm"]), "gradcheck", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def full_copy(tmp_path_factory):
    """A copy with every exercise stubbed."""
    dest = tmp_path_factory.mktemp("everything")
    make(dest)
    shared = next((p / "shared" for p in ROOT.parents if (p / "shared" / "data").is_dir()), None)
    if shared is not None:  # the notebooks look for ../shared/data above their folder, as in the repository
        (dest / "shared").symlink_to(shared, target_is_directory=True)
    return dest


# ---------------------------------------------------------------- planted mistakes, in words


def attention_case(backward, mask=None, seed=0):
    r = np.random.default_rng(seed)
    q, k, v = r.standard_normal((2, 3, 4)), r.standard_normal((2, 4, 4)), r.standard_normal((2, 4, 2))
    with recording() as found:
        errors = check_pair(attention_forward, attention_backward if backward is None else backward, [q, k, v],
                            ["q", "k", "v"], {"mask": mask}, axes={"q": "B T_q hs", "k": "B T_kv hs", "v": "B T_kv hs"})
    return errors, {f.name: f.note for f in found}


def no_scale(dout, cache):
    """attention_backward without the 1/sqrt(d_k) of dq (d_k = 4: dq comes out 2x too large)."""
    q, k, v, w, mask, c_soft, scale = cache
    dq, dk, dv = attention_backward(dout, cache)
    return dq / scale, dk, dv


def no_mask(dout, cache):
    """attention_backward with dP = dA, the mask forgotten: wrong only for the query that sees no key."""
    q, k, v, w, mask, c_soft, scale = cache
    dv = np.swapaxes(w, -1, -2) @ dout
    dp = dout @ np.swapaxes(v, -1, -2)
    ds = softmax_backward(dp, c_soft)
    return (ds @ k) * scale, (np.swapaxes(ds, -1, -2) @ q) * scale, dv


def layernorm_case(backward):
    r = np.random.default_rng(0)
    with recording() as found:
        errors = check_pair(layernorm_forward, backward, [r.standard_normal((2, 3, 8)), 1 + r.standard_normal(8),
                                                          r.standard_normal(8)], ["x", "gamma", "beta"])
    return errors, {f.name: f.note for f in found}


def layernorm_variant(sign=1.0, drop_mean=False, gamma_axis=None):
    def backward(dy, cache):
        xhat, rstd, gamma = cache
        C = xhat.shape[-1]
        dbeta = sign * dy.reshape(-1, C).sum(axis=0)
        dgamma = (dy * xhat).sum(axis=gamma_axis) if gamma_axis is not None else (dy * xhat).reshape(-1, C).sum(0)
        g = dy * gamma
        mean_g = 0 if drop_mean else g.mean(axis=-1, keepdims=True)
        dx = rstd * (g - mean_g - xhat * (g * xhat).mean(axis=-1, keepdims=True))
        return dx, dgamma, dbeta

    return backward


def test_reference_passes_the_planted_cases():
    """The harness itself: the right backward passes with no finding (so the findings below are the bugs')."""
    errors, notes = attention_case(None)
    assert max(errors.values()) <= 1e-7 and notes == {}
    errors, notes = layernorm_case(layernorm_variant())
    assert max(errors.values()) <= 1e-7 and notes == {}


def test_missing_scale_is_a_constant_ratio():
    errors, notes = attention_case(no_scale)
    assert errors["dk"] <= 1e-7 and errors["dv"] <= 1e-7 and set(notes) == {"dq"}
    assert re.fullmatch(r"dq: relative error 3\.3e-01; ≈ 2\.00 × the numerical gradient everywhere; cosine 1\.0000",
                        notes["dq"]), notes


def test_wrong_sign_is_named():
    errors, notes = layernorm_case(layernorm_variant(sign=-1.0))
    assert set(notes) == {"dbeta"} and "the sign is flipped everywhere; cosine -1.0000" in notes["dbeta"]


def test_dropped_term_gives_the_cosine_and_no_false_ratio():
    errors, notes = layernorm_case(layernorm_variant(drop_mean=True))
    assert set(notes) == {"dx"}
    cosine = float(re.search(r"cosine (\S+)$", notes["dx"]).group(1))
    assert 0 < cosine < 0.99 and "everywhere" not in notes["dx"]


def test_wrong_sum_axis_names_the_gradient_and_both_shapes():
    errors, notes = layernorm_case(layernorm_variant(gamma_axis=-1))
    assert errors["dgamma"] == np.inf and notes["dgamma"] == "dgamma: yours (2, 3), expected (8,)"
    assert errors["dx"] <= 1e-7  # the other gradients are still checked


def test_missing_mask_is_confined_to_the_query_without_keys():
    mask = np.array([[True, True, True, False], [True, False, False, False]])[:, None, :]
    mask = mask & np.array([True, True, False])[None, :, None]  # query 2 sees no key
    errors, notes = attention_case(no_mask, mask)
    assert errors["dv"] <= 1e-7
    assert "wrong only in query positions 2 of 3" in notes["dq"], notes


def test_confinement_names_time_steps_heads_rows_and_columns():
    n = np.random.default_rng(0).standard_normal((2, 5, 3))
    a = n.copy()
    a[:, 3] *= 1.5
    assert "wrong only in time steps 3 of 5" in describe_difference(a, n, axes="B T D")
    assert "wrong only in indices of axis 1 3 of 5" in describe_difference(a, n)
    h = np.random.default_rng(1).standard_normal((2, 4, 3, 2))
    b = h.copy()
    b[:, 1:3] = 0
    assert "wrong only in heads 1-2 of 4" in describe_difference(b, h, axes="B H T hs")
    m = np.random.default_rng(2).standard_normal((4, 6))
    c = m.copy()
    c[:, [0, 5]] = -c[:, [0, 5]]
    text = describe_difference(c, m)
    assert "the sign is flipped at the 8 wrong entries" in text and "wrong only in columns 0, 5 of 6" in text


def test_an_exception_or_a_bad_shape_fails_that_case_alone(capsys):
    all_cases()

    def raises():
        mask = None
        return {"dx": float(np.ones(2) * mask)}  # TypeError, as in `dP = dW * mask` with mask None

    def misshapen():
        r = np.random.default_rng(0)
        return check_pair(layernorm_forward, layernorm_variant(gamma_axis=-1), [
            r.standard_normal((2, 3, 8)), 1 + r.standard_normal(8), r.standard_normal(8)], ["x", "gamma", "beta"])

    added = [Case("test", "raises", raises), Case("test", "misshapen", misshapen)]
    REGISTRY.extend(added)
    try:
        code = cli.main(["gradcheck", "--only", "test/", "ops/linear"])
    finally:
        del REGISTRY[-2:]
    out = capsys.readouterr().out
    assert code == 1
    assert re.search(r"^test\s+raises\s+FAIL\n\s+TypeError: .*NoneType'$", out, re.MULTILINE), out
    assert re.search(r"^test\s+misshapen\s+dgamma\s+inf\s+FAIL\n\s+dgamma: yours \(2, 3\), expected \(8,\)$", out,
                     re.MULTILINE), out
    assert re.search(r"^ops\s+linear\s+dW\s+\S+\s+pass$", out, re.MULTILINE)  # the run went on
    assert "1 of 3 passed" in out and f"({PACKAGE})" in out


# ---------------------------------------------------------------- dtypes


def test_float64_gradient_for_float32_inputs_fails():
    def upcasting(dloss, cache):
        logp, safe, keep, count = cache
        p = np.exp(logp.astype(np.float64))
        np.put_along_axis(p, safe[..., None], np.take_along_axis(p, safe[..., None], -1) - 1, -1)
        return p * (keep * (np.asarray(dloss) / count))[..., None]

    r = np.random.default_rng(0)
    with recording() as found:
        errors = check_pair(cross_entropy_forward, upcasting, [r.standard_normal((2, 5, 7)),
                                                               r.integers(0, 7, (2, 5))], ["logits", "targets"])
    assert errors["dlogits"] <= 1e-7 and errors["dlogits float32"] == np.inf  # right values, wrong dtype
    assert [f.note for f in found] == ["dlogits: yours is float64 for float32 inputs, expected float32 "
                                       "(outputs and gradients keep the input's dtype)"]


def test_every_exercise_is_called_with_float32_by_its_checks():
    """Run every case under a profiler: each exercise function must be entered at least once with a float32
    array among its arguments (the float32 pass of check_pair and check_model)."""
    import importlib

    from minilm.classroom.selfcheck import exercise_cases

    table = exercise_cases()
    codes = {}
    for e in find_exercises():
        codes[getattr(importlib.import_module("minilm." + e.module), e.function).__code__] = e.name
    seen = set()

    def profile(frame, event, arg):
        if event == "call" and frame.f_code in codes:
            for v in list(frame.f_locals.values()):  # arrays, a parameter dict's arrays, or a dtype argument
                values = list(v.values()) if isinstance(v, dict) else [v]
                if any(getattr(a, "dtype", None) == np.float32 or a is np.float32
                       or isinstance(a, np.dtype) and a == np.float32 for a in values):
                    seen.add(codes[frame.f_code])
                    break

    by_name = {f"{c.group}/{c.name}": c for c in all_cases()}
    sys.setprofile(profile)
    try:
        for exercise, names in table.items():  # one case of each exercise at a time, the fewest-entry first
            for name in sorted(names, key=lambda n: ("every entry" in n, n)):
                if exercise not in seen:
                    by_name[name].run()
    finally:
        sys.setprofile(None)
    missing = sorted(set(codes.values()) - seen)
    assert not missing, f"no float32 call in the checks of {missing}"


# ---------------------------------------------------------------- the self-check of a copy


def test_a_stubbed_copy_never_self_checks_as_passing(full_copy):
    out = selfcheck(full_copy)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stdout.splitlines()[0] == f"checking the package at {full_copy.resolve() / 'minilm'}"
    graded = {n for names in json.loads((full_copy / MANIFEST).read_text())["cases"].values() for n in names}
    passed = re.findall(r"^(\w+)\s+(.+?)\s{2,}\S+\s+\S+\s+pass$", out.stdout, re.MULTILINE)
    assert passed and not {f"{g}/{c}" for g, c in passed} & graded  # only cases that call no exercise pass
    assert re.search(rf"^{len(passed)} of {len(all_cases())} passed in ", out.stdout, re.MULTILINE)
    for where in (full_copy / "notebooks", full_copy / "minilm"):  # these import the installed minilm
        out = selfcheck(where)
        assert out.returncode == 2 and out.stdout == "", out.stdout
        assert out.stderr.count("\n") == 1 and f"run `cd {full_copy.resolve()} && python -m minilm gradcheck`" \
            in out.stderr, out.stderr
    script = Path(sys.executable).with_name("minilm")
    if script.is_file():
        out = selfcheck(full_copy, command=[str(script)])
        assert out.returncode == 2 and "not the copy's" in out.stderr, out.stdout + out.stderr


def test_refusal_outside_and_inside_a_copy(tmp_path):
    refuse_other_package(tmp_path)  # no exercises.json around: nothing to refuse
    (tmp_path / MANIFEST).write_text("{}")
    (tmp_path / "deep" / "er").mkdir(parents=True)
    with pytest.raises(ValueError, match=f"student copy {tmp_path.resolve()}, but the minilm imported is"):
        refuse_other_package(tmp_path / "deep" / "er")
    refuse_other_package(tmp_path, package=tmp_path / "minilm")  # the copy's own package


def test_only_takes_exercise_module_and_case_names(capsys):
    def cases_run(*only):
        code = cli.main(["gradcheck", "--only", *only])
        out = capsys.readouterr().out
        return code, re.findall(r"^(\w+)\s+(.+?)\s{2,}\S+\s+\S+\s+pass$", out, re.MULTILINE)

    code, ran = cases_run("layernorm_backward")
    assert code == 0 and ran == [("ops", "layernorm")]
    code, ran = cases_run("lstm_step_backward", "minilm.linear")
    assert code == 0 and ran == [("ops", "linear"), ("lstm", "step")]
    code, ran = cases_run("sinusoidal")
    assert code == 0 and [c for _, c in ran] == ["sinusoidal, scaled by sqrt(C)", "sinusoidal, unscaled"]
    assert cli.main(["gradcheck", "--only", "layernorm_bakward"]) == 2
    assert "--only 'layernorm_bakward' matches no exercise, module or case" in capsys.readouterr().err


def test_exercise_list_names_each_exercises_cases(capsys):
    assert cli.main(["exercise", "list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^lstm_step_backward\s+minilm/lstm.py:\d+\s+lstm/step$", out, re.MULTILINE)
    assert re.search(r"^attention_backward\s+\S+\s+attention/scaled dot-product; ", out, re.MULTILINE)


def test_grader_and_self_check_say_the_same(tmp_path, capsys):
    """The missing scale, a flipped sign in the LSTM step, and a float64 cross-entropy gradient: the same
    sentences from `python -m minilm gradcheck` in the copy and from `exercise check` of the teacher."""
    make(tmp_path, HW)
    m = tmp_path / "minilm"
    put(m / "attention.py", "attention_backward", """
    dv = np.swapaxes(w, -1, -2) @ dout
    dw = dout @ np.swapaxes(v, -1, -2)
    dp = dw if mask is None else dw * mask
    dscores = softmax_backward(dp, c_soft)
    dq = dscores @ k
    dk = (np.swapaxes(dscores, -1, -2) @ q) * scale""")
    put(m / "lstm.py", "lstm_step_backward", """
    da, dc_prev = lstm_gates_backward(dh, dc, cache_gates)
    dx, dWx, db = linear_backward(da, cache_x)
    dh_prev, dWh, _ = linear_backward(-da, cache_h)""")
    put(m / "softmax.py", "cross_entropy_backward", """
    p = np.exp(logp.astype(np.float64))
    np.put_along_axis(p, safe[..., None], np.take_along_axis(p, safe[..., None], -1) - 1, -1)
    dlogits = p * (keep * (np.asarray(dloss) / count))[..., None]""")
    mine = selfcheck(tmp_path, "--only", *HW[:1], *HW[2:]).stdout
    code = cli.main(["exercise", "check", str(tmp_path), "--only", *HW[:1], *HW[2:], "-j", "1"])
    graded = capsys.readouterr().out
    assert code == 1
    sentences = ["dq: relative error 3.3e-01; ≈ 2.00 × the numerical gradient everywhere; cosine 1.0000",
                 "dh_prev: relative error 1.0e+00; the sign is flipped everywhere; cosine -1.0000",
                 "dlogits: yours is float64 for float32 inputs, expected float32 (outputs and gradients keep the "
                 "input's dtype)"]
    for s in sentences:
        assert s in mine, (s, mine)
        assert s in graded, (s, graded)
    assert re.search(r"^attention_backward\s+wrong\s+dq: relative error 3.3e-01; ≈ 2.00 ×", graded, re.MULTILINE)
    assert "dq: relative error 3.3e-01 against the reference; ≈ 2.00 × the reference's everywhere" in graded


# ---------------------------------------------------------------- hints


@pytest.mark.parametrize("exercise", find_exercises(), ids=lambda e: e.name)
def test_hint_names_the_cache_the_helpers_and_the_outputs(exercise):
    source = module_files()[exercise.module].read_text()
    text = hint(exercise, source)
    tree = ast.parse(source)
    fn = max((n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == exercise.function
              and n.lineno <= exercise.line <= n.end_lineno), key=lambda n: n.lineno)
    unpacks = [n for n in fn.body if n.lineno < exercise.line and isinstance(n, ast.Assign)
               and isinstance(n.targets[0], ast.Tuple) and isinstance(n.value, ast.Name)]
    for n in unpacks:
        assert ast.unparse(n.targets[0]).strip("()") + " = " + n.value.id in text, (exercise.name, text)
    lines = source.splitlines()
    region = "\n".join(ln for r in find_regions(source) if r.function == exercise.function
                       for ln in lines[r.begin + 1 : r.end])
    imported = {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom)
                and (n.module or "").startswith("minilm") for a in n.names}
    for name in re.findall(r"\b(\w+)\(", region):
        if name in imported:
            assert f"{name} (" in text.split("Helpers it may call:")[-1], (exercise.name, name, text)


@pytest.mark.parametrize("name, parts", [
    ("attention_backward", ["mask, boolean or None", "c_soft, the cache of softmax_forward(S), which is what "
                            "softmax_backward takes", "A = P * mask", "dq (..., T_q, d_k)"]),
    ("lstm_step_backward", ["linear_forward(h_prev, Wh) (no bias: linear_backward returns None for its",
                            "linear_backward (minilm.linear)", "dWh (Hd, 4Hd)"]),
    ("cross_entropy_backward", ["count, the number M of counted positions", "softmax(logits) = exp(logp)",
                                "dlogits (..., V)"]),
])
def test_the_three_hints_students_missed(name, parts):
    e = next(e for e in find_exercises() if e.name == name)
    text = hint(e, module_files()[e.module].read_text())
    for part in parts:
        assert part in " ".join(text.split()), (part, text)


# ---------------------------------------------------------------- leaks


def copy_texts(dest: Path) -> dict[str, list[str]]:
    """Every line of code in the copy: its .py files and its notebooks' code cells."""
    found = {str(p.relative_to(dest)): p.read_text().splitlines() for p in dest.rglob("*.py")}
    for nb in dest.rglob("*.ipynb"):
        for i, cell in enumerate(json.loads(nb.read_text())["cells"]):
            if cell["cell_type"] == "code":
                found[f"{nb.relative_to(dest)} cell {i}"] = "".join(cell["source"]).splitlines()
    return found


def test_no_copy_holds_a_reference_body(tmp_path):
    """A copy of each exercise alone: no line of its solution anywhere (code files and notebooks), no fast/."""
    leaks = []
    for e in find_exercises():
        dest = tmp_path / e.name
        make(dest, [e.name])
        assert not (dest / "minilm" / "fast").exists()
        answer = answer_lines([e])
        assert answer, e.name  # every exercise has distinctive lines to look for
        for where, lines in copy_texts(dest).items():
            hits = [ln.strip() for ln in lines if normalised(ln) in answer]
            if hits:
                leaks.append(f"{e.name}: {where}: {hits[0]}")
    assert not leaks, "\n".join(leaks)


def test_the_search_finds_what_a_teacher_copy_keeps(tmp_path):
    """The same search on the answer key finds the bodies: the leak test can fail."""
    make(tmp_path, ["lstm_step_backward"], teacher=True)
    answer = answer_lines([e for e in find_exercises() if e.name == "lstm_step_backward"])
    hits = {w for w, lines in copy_texts(tmp_path).items() if any(normalised(ln) in answer for ln in lines)}
    assert "minilm/lstm.py" in hits


def test_neighbour_that_spells_the_answer_out_is_stubbed(tmp_path):
    from minilm.classroom.grading import checks_of

    make(tmp_path, ["lstm_step_backward"], cases=checks_of(find_exercises()))
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["exercises"] == ["lstm_step_backward"] and "lstm_backward" in manifest["also_stubbed"]
    src = (tmp_path / "minilm" / "lstm.py").read_text()
    assert "lstm_backward (§5.2) is not written yet" in src
    readme = (tmp_path / "README.md").read_text()
    assert "`lstm_backward` (`minilm/lstm.py`)" in readme and "Not in this copy: `minilm/fast/`" in readme
    assert "cd <this folder>\n    python -m minilm gradcheck" in readme
    assert manifest["cases"]["lstm_step_backward"] == ["lstm/step"]


def test_a_code_cell_that_writes_a_handed_out_answer_is_stubbed():
    e = next(e for e in find_exercises() if e.name == "attention_backward")
    answer = answer_lines([e])
    line = next(ln for ln in module_files()["attention"].read_text().splitlines() if normalised(ln) in answer)
    nb = {"cells": [{"cell_type": "code", "id": "a", "metadata": {}, "source": "x = 1\n" + line.strip(),
                     "outputs": [], "execution_count": None}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    cell = student_notebook(nb, answer)["cells"][-1]
    assert "NotImplementedError" in cell["source"] and normalised(line) not in map(normalised,
                                                                                  cell["source"].splitlines())


# ---------------------------------------------------------------- notebooks: answers, ids, running to the end


def tagged_notebook():
    cells = [
        ("markdown", [], "Predict before you run: what does `f(3)` print?"),
        ("markdown", ["solution"], "It prints 6: f doubles."),
        ("code", ["solution"], "answer = 6"),
        ("code", [], "from minilm.activations import tanh_backward\nrows = []\nrows.append(1)\n"
                     "tanh_backward(1.0, None)\nrows.append(2)"),
        ("code", [], "print('rows', len(rows))"),
        ("code", [], "fresh = [1, 2, 3]\nlen(fresh)"),
        ("code", [], "x = 5\ntanh_backward(1.0, None)"),
        ("code", [], "print('x is', x)\nprint('the end')"),
    ]
    return {"cells": [{"cell_type": t, "id": f"c{i}", "metadata": {"tags": tags}, "source": s,
                       **({"outputs": [], "execution_count": None} if t == "code" else {})}
                      for i, (t, tags, s) in enumerate(cells)],
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def execute(path: Path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=240, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


def stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("name") == "stdout")


def test_stubbed_notebook_runs_to_the_end_with_one_line_per_stopped_cell(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    make(tmp_path, ["tanh_backward"], notebooks=tmp_path / "none")
    (tmp_path / "notebooks").mkdir()
    path = tmp_path / "notebooks" / "hw.ipynb"
    student = student_notebook(tagged_notebook())
    path.write_text(json.dumps(student))
    nbformat = pytest.importorskip("nbformat")
    nbformat.validate(nbformat.reads(json.dumps(student), as_version=4))  # inserted cells have ids
    assert len({c["id"] for c in student["cells"]}) == len(student["cells"])
    nb = execute(path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    outs = [stdout(c) for c in code]
    assert outs[0] == f"minilm of this copy: {tmp_path.resolve() / 'minilm'}\n"
    assert outs[1] == "[rest of this cell skipped] this cell is yours to write: the text above says what it computes\n"
    assert re.fullmatch(r"\[rest of this cell skipped\] tanh_backward \(§[\d., §]+\) is not written yet: write the "
                        r"region between the markers in minilm/activations.py\n", outs[2]), outs[2]
    assert outs[3].startswith("[cell skipped] it needs rows, left unfinished above: tanh_backward")  # half-filled
    assert code[4].outputs[0]["data"]["text/plain"] == "3"  # an independent cell runs, its value is shown
    assert outs[5].startswith("[rest of this cell skipped] tanh_backward")
    assert outs[6] == "x is 5\nthe end\n"  # x was assigned whole before the stub: the last cell runs
    assert not any(o.get("output_type") == "error" for c in code for o in c.outputs)
    assert "It prints 6" not in json.dumps(student) and "answer = 6" not in json.dumps(student)


def test_the_reference_runs_the_same_notebook_unchanged(tmp_path):
    """Without the setup cell's transformer, the stub's NotImplementedError stops the notebook: the
    mechanism is what makes it run to the end."""
    nbclient = pytest.importorskip("nbclient")
    nb = tagged_notebook()
    nb["cells"][3]["source"] = "raise NotImplementedError('stub')"
    path = tmp_path / "plain.ipynb"
    path.write_text(json.dumps(nb))
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="stub"):
        execute(path)


def test_teacher_copy_keeps_answers_and_outputs(tmp_path):
    nb = tagged_notebook()
    nb["cells"][2]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "6\n"}]
    teacher = teacher_notebook(nb)
    assert teacher["cells"][0]["id"] == "minilm-teacher-note" and "2 cells tagged `solution`" in \
        teacher["cells"][0]["source"]
    assert teacher["cells"][1:] == nb["cells"]
    student = student_notebook(nb)
    assert [c["source"] for c in student["cells"] if "solution" in c["metadata"].get("tags", [])] == [
        "*Your answer here.* (The teacher's copy has one.)",
        "# YOUR CODE HERE (replace the raise below)\n"
        'raise NotImplementedError("this cell is yours to write: the text above says what it computes")']


def notebook_solutions(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    return ["".join(c["source"]) for c in cells if "solution" in c["metadata"].get("tags", [])]


def test_make_teacher_and_student_copies_of_the_repositorys_notebooks(full_copy, tmp_path):
    """On the notebooks of the repository: every solution-tagged cell is gone from the student copy and
    kept, with the outputs, in the teacher's copy; nothing is stubbed in the teacher's package."""
    make(tmp_path, teacher=True)
    assert json.loads((tmp_path / MANIFEST).read_text())["teacher"] is True
    for name, path in module_files(tmp_path / "minilm").items():
        assert path.read_text() == module_files()[name].read_text(), name
    originals = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert [p.name for p in sorted((full_copy / "notebooks").glob("*.ipynb"))] == [p.name for p in originals]
    for path in originals:
        student = (full_copy / "notebooks" / path.name).read_text()
        teacher = json.loads((tmp_path / "notebooks" / path.name).read_text())
        original = json.loads(path.read_text())
        assert teacher["cells"][1:] == original["cells"], path.name
        for text in notebook_solutions(path):
            if text.strip():
                assert json.dumps(text)[1:-1] not in student, (path.name, text[:60])
        assert BEGIN not in student or "YOUR CODE HERE" in student


NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_student_notebook_runs_to_the_end_with_every_stub(full_copy, name, tmp_path, monkeypatch):
    """Each notebook of the repository, in a copy with every exercise stubbed: no cell errors, and the
    cells that stopped say so in one line."""
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    monkeypatch.setenv("MINILM_FIGURES", str(tmp_path))
    nb = execute(full_copy / "notebooks" / name)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors[0]
    said = "".join(stdout(c) for c in nb.cells if c.cell_type == "code")
    assert "is not written yet" in said or "is yours to write" in said  # at least one stub was met
    assert all(ln.startswith(("[rest of this cell skipped] ", "[cell skipped] it needs ")) for ln in said.splitlines()
               if "not written yet" in ln or "yours to write" in ln)
