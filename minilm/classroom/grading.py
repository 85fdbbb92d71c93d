"""Grading a student copy: ``python -m minilm exercise check DIR``.

For each exercise (a function with a marked region, see minilm.classroom.exercises):

1. Its checks are the registered gradient-check cases (minilm/cases/) that
   call its function, the smallest of them: ``linear_backward`` is graded by
   the ``ops/linear`` case, not by a whole model that also calls it (a case
   is left out when another calls a strict subset of its exercises).  Which
   case calls what is found by running every case once on the reference.
2. A fresh interpreter (minilm/classroom/worker.py) imports the copy (its
   PYTHONPATH starts with DIR, so ``import minilm`` is the student's package)
   with the regions of every *other* exercise put back from the reference: a
   bug in ``linear_backward`` fails ``linear_backward`` alone, not every
   exercise built on it.  It runs the cases in full: the analytic gradients
   against centred differences of the copy's own forward.
3. The forward's output and the analytic gradients of each case are compared
   with the reference's on the same inputs, which catches a forward that is
   wrong together with its backward.

An exercise *passed* when every output's largest relative error is at most
minilm.gradcheck.TOLERANCE; it is *not implemented* when it raises
NotImplementedError (the stub); any other exception, a missing module, a
timeout or a copy that loads the reference package makes it *wrong*.
"""

from __future__ import annotations

import hashlib
import json
import os
import site
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from minilm.classroom.exercises import (
    MANIFEST,
    PACKAGE,
    Exercise,
    find_exercises,
    module_files,
    restore_regions,
    select,
)
from minilm.gradcheck import TOLERANCE, describe_difference, rel_error

WORKER = Path(__file__).with_name("worker.py")
_RECORDS: dict = {}  # the last reference run, keyed by a hash of the reference's sources


def _pythonpath(first: Path) -> str:
    """``first``, then the directories of the installed packages (numpy): the worker runs with -S."""
    dirs = [str(first), str(Path(np.__file__).resolve().parents[1])]
    dirs += [d for d in getattr(site, "getsitepackages", list)() + [site.getusersitepackages()] if Path(d).is_dir()]
    return os.pathsep.join(dict.fromkeys(dirs))


def _start(job: dict, tmp: Path, tag: str) -> tuple[subprocess.Popen, Path]:
    package = Path(job["package"])
    job_path, log = tmp / f"{tag}.json", tmp / f"{tag}.log"
    job_path.write_text(json.dumps(job), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONSTARTUP", "PYTHONHOME")}
    env.update(PYTHONPATH=_pythonpath(package.parent), MPLBACKEND="Agg")
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-S", "-B", "-c", WORKER.read_text(encoding="utf-8"), str(job_path)],
                                cwd=package.parent, env=env, stdout=f, stderr=subprocess.STDOUT)
    return proc, log


def _tail(log: Path, n: int = 3) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()] if log.exists() else []
    return " | ".join(lines[-n:]) or "no output"


def _read_lines(path: Path, pos: int) -> tuple[list[dict], int]:
    """Complete JSON lines of ``path`` after byte ``pos``; the new position."""
    if not path.exists():
        return [], pos
    with open(path, "rb") as f:
        f.seek(pos)
        data = f.read()
    end = data.rfind(b"\n") + 1
    return [json.loads(ln) for ln in data[:end].splitlines() if ln.strip()], pos + end


# ---------------------------------------------------------------- the reference run


def reference_run(exercises: list[Exercise]) -> tuple[list[dict], dict]:
    """Run every case once on the reference: [{module, group, name, called, captures, error}], arrays."""
    key = hashlib.sha256(b"".join(p.read_bytes() for p in module_files(PACKAGE).values())).hexdigest()
    if key not in _RECORDS:
        with tempfile.TemporaryDirectory(prefix="minilm-reference-") as tmp:
            tmp = Path(tmp)
            job = {"mode": "record", "package": str(PACKAGE), "trusted": str(PACKAGE),
                   "results": str(tmp / "cases.jsonl"), "arrays": str(tmp / "arrays.npz"),
                   "exercises": [vars(e) for e in exercises]}
            proc, log = _start(job, tmp, "record")
            if proc.wait() != 0:
                raise RuntimeError(f"the reference run failed: {_tail(log, 8)}")
            cases = _read_lines(tmp / "cases.jsonl", 0)[0]
            with np.load(tmp / "arrays.npz", allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        _RECORDS.clear()
        _RECORDS[key] = cases, arrays
    return _RECORDS[key]


def _cases_for(name: str, cases: list[dict]) -> list[dict]:
    """The cases that call exercise ``name``, but for those that call a superset of another's exercises:
    ops/linear grades linear_backward, multi-head attention (which also calls it) does not."""
    hits = [c for c in cases if name in c["called"] and not c["error"]]
    return [c for c in hits if not any(set(d["called"]) < set(c["called"]) for d in hits)]


def checks_of(exercises: list[Exercise]) -> dict[str, list[str]]:
    """{exercise name: the cases ("group/name") that grade it}."""
    cases, _ = reference_run(exercises)
    return {e.name: [f"{c['group']}/{c['name']}" for c in _cases_for(e.name, cases)] for e in exercises}


# ---------------------------------------------------------------- grading


def _overrides(package: Path, exercises: list[Exercise], chosen: list[Exercise]) -> tuple[dict, dict]:
    """Sources for the worker: every module of the copy with all regions put back (shared), and for each
    chosen exercise its own module with all regions but its own put back."""
    files = module_files(PACKAGE)
    modules = dict.fromkeys(e.module for e in exercises)
    student, reference = {}, {m: files[m].read_text(encoding="utf-8") for m in modules}
    for m in modules:
        try:
            student[m] = (package / files[m].relative_to(PACKAGE)).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # the worker meets the missing or unreadable file itself and reports it

    def put_back(m, keep=None):
        try:
            return restore_regions(student[m], reference[m], keep)
        except ValueError:  # unbalanced markers in the copy: its file is used as it is
            return student[m]

    shared = {"minilm." + m: put_back(m) for m in student}
    own = {e.name: {"minilm." + e.module: put_back(e.module, e.function)} if e.module in student else {}
           for e in chosen}
    return {k: v for k, v in shared.items() if v != student[k[len("minilm."):]]}, own


def _grade_all(package: Path, jobs: list[dict], shared: dict, timeout: float, fast: bool, tmp: Path, tag: str) -> dict:
    """Run the worker over ``jobs``; restart it after a crash or a timeout, blaming the exercise it was on."""
    results, remaining, attempt = {}, list(jobs), 0
    while remaining:
        attempt += 1
        out = tmp / f"{tag}-results{attempt}.jsonl"
        job = {"mode": "grade", "fast": fast, "package": str(package), "trusted": str(PACKAGE), "results": str(out),
               "arrays": str(tmp), "overrides": shared, "exercises": remaining}
        proc, log = _start(job, tmp, f"{tag}-grade{attempt}")
        pos, current, since = 0, None, time.monotonic()
        while True:
            code = proc.poll()
            lines, pos = _read_lines(out, pos)
            for ln in lines:
                if "start" in ln:
                    current, since = ln["start"], time.monotonic()
                else:
                    results[ln["result"]], current = ln, None
            if code is not None:
                break
            if current and time.monotonic() - since > timeout:
                proc.kill()
                proc.wait()
                results[current] = {"status": "error", "error": f"timed out after {timeout:g} s", "where": None}
                break
            time.sleep(0.02)
        if code is not None and current:
            results[current] = {"status": "error", "where": None,
                                "error": f"the grading process stopped (exit status {code}): {_tail(log)}"}
        elif code not in (None, 0) or (code == 0 and any(j["name"] not in results for j in remaining)):
            raise RuntimeError(f"the grading process failed before grading: {_tail(log, 8)}")
        remaining = [j for j in remaining if j["name"] not in results]
    return results


def _compare(result: dict, npz: Path, reference: dict[str, dict], ref_arrays: dict) -> list[tuple[float, str]]:
    """(error, "output: what") for every checked output: the case's own errors and the comparison with the
    reference; a missing output or a shape mismatch counts as error inf.  A failed one says how it differs
    (minilm.gradcheck.describe_difference, the words of the self-check)."""
    found = []
    with np.load(npz, allow_pickle=False) as z:
        got = {k: z[k] for k in z.files}
    for i, check in enumerate(result["checks"]):
        notes = check.get("notes", {})
        for k, v in check["errors"].items():
            what = "absolute value" if "(abs)" in k else "relative error"
            text = notes.get(k) if not v <= TOLERANCE and k in notes else f"{k}: {what} {v:.1e}"
            found.append((v, f"{text} (gradient check {check['case']})"))
        ref = reference[check["case"]]
        for j, labels in enumerate(ref["captures"][: len(check["captures"])]):
            mine = check["captures"][j]
            for n, label in enumerate(labels):
                want = ref_arrays[f"{ref['index']}_{j}_{n}"]
                if label not in mine:
                    found.append((np.inf, f"{label}: not returned (compared with the reference, {check['case']})"))
                    continue
                have = got[f"{i}_{j}_{mine.index(label)}"]
                if have.shape != want.shape:
                    found.append((np.inf, f"{label}: yours {have.shape}, expected {want.shape} "
                                          f"(compared with the reference, {check['case']})"))
                    continue
                err = rel_error(have, want)
                how = "" if err <= TOLERANCE else "; " + describe_difference(have, want, "the reference's")
                found.append((err, f"{label}: relative error {err:.1e} against the reference{how} ({check['case']})"))
    return [(e if e == e else np.inf, what) for e, what in found]  # NaN counts as wrong


def grade(package_dir: Path, only: list[str] | None = None, timeout: float = 120.0, workers: int = 2,
          fast: bool = False) -> list[dict]:
    """Grade the copy in ``package_dir`` (holding minilm/): one dict per exercise with
    name, status ("passed", "not implemented", "wrong", "no check"), detail, outputs [(error, what)].
    With ``fast`` the finite differences are skipped: every output must still match the reference's."""
    package = (Path(package_dir) / "minilm").resolve()
    if not (package / "__init__.py").is_file():
        raise ValueError(f"{package_dir} holds no package minilm/ (no {package / '__init__.py'})")
    manifest = Path(package_dir) / MANIFEST
    if package == PACKAGE and manifest.is_file():
        raise ValueError(f"the reference is the student copy {package}: run the check from outside "
                         f"{package_dir}, with the teacher's minilm")
    exercises = find_exercises(PACKAGE)
    if not only and manifest.is_file():
        only = json.loads(manifest.read_text(encoding="utf-8"))["exercises"] or None
    chosen = select(exercises, only)
    cases, ref_arrays = reference_run(exercises)
    reference = {f"{c['group']}/{c['name']}": {**c, "index": i} for i, c in enumerate(cases)}
    shared, own = _overrides(package, exercises, chosen)
    jobs = [{"name": e.name, "overrides": own[e.name],
             "cases": [[c["module"], c["group"], c["name"]] for c in _cases_for(e.name, cases)]} for e in chosen]
    graded = [j for j in jobs if j["cases"]]
    with tempfile.TemporaryDirectory(prefix="minilm-grade-") as tmp:
        groups = [(f"w{i}", graded[i::workers]) for i in range(max(1, workers)) if graded[i::workers]]
        with ThreadPoolExecutor(max(1, len(groups))) as pool:
            parts = list(pool.map(lambda g: _grade_all(package, g[1], shared, timeout, fast, Path(tmp), g[0]), groups))
        results = {k: v for part in parts for k, v in part.items()}
        report = []
        for e, j in zip(chosen, jobs, strict=True):
            r = results.get(e.name)
            row = {"name": e.name, "outputs": [], "detail": "", "cases": [f"{c[1]}/{c[2]}" for c in j["cases"]]}
            if r is None:
                broken = [f"{c['group']}/{c['name']}: {c['error']['error']}" for c in cases
                          if c["error"] and e.name in c["called"]]
                unloaded = [f"{c['module']}: {c['error']['error']}" for c in cases if c["name"] == "(import)"]
                row.update(status="no check", detail="its cases fail on the reference: " + "; ".join(broken)
                           if broken else "no registered gradient-check case calls this function"
                           + ("" if not unloaded else " (cases that fail to import: " + "; ".join(unloaded) + ")"))
            elif r["status"] == "not implemented":
                row.update(status="not implemented", detail=f"raises NotImplementedError at {r['where']}"
                           if r.get("where") else r["error"])
            elif r["status"] == "error":
                row.update(status="wrong", detail=r["error"] + (f" (at {r['where']})" if r.get("where") else ""))
            else:
                row["outputs"] = sorted(_compare(r, Path(tmp) / f"{e.name}.npz", reference, ref_arrays),
                                        key=lambda t: -t[0])
                bad = [what for err, what in row["outputs"] if not err <= TOLERANCE]
                if not row["outputs"]:
                    row.update(status="no check", detail="its cases compare no output with the reference: "
                               "grade it without --fast")
                elif bad:
                    row.update(status="wrong", detail=bad[0], more=bad[1:4] + ([f"and {len(bad) - 4} more"]
                                                                              if len(bad) > 4 else []))
                else:
                    worst = row["outputs"][0][0] if row["outputs"] else 0.0
                    n = len(j["cases"])
                    row.update(status="passed", detail=f"largest relative error {worst:.1e} "
                               f"({len(row['outputs'])} outputs, {n} case{'s' if n > 1 else ''})")
            report.append(row)
    return report


def check(package_dir: Path, only: list[str] | None = None, timeout: float = 120.0, verbose: bool = False,
          json_path: str | None = None, workers: int = 2, fast: bool = False) -> int:
    """Print the grade of each exercise and a summary line; 0 if every exercise passed, 1 if not, 2 on bad use."""
    t0 = time.perf_counter()
    try:
        report = grade(package_dir, only, timeout, workers, fast)
    except (ValueError, RuntimeError) as e:
        print(f"minilm exercise check: error: {e}")
        return 2
    print(f"grading {package_dir} against {PACKAGE}{' (fast: no finite differences)' if fast else ''}; "
          f"an output passes when its largest relative error is <= {TOLERANCE:.0e}\n")
    width = max(len(r["name"]) for r in report) if report else 8
    for r in report:
        print(f"{r['name']:<{width}}  {r['status']:<15}  {r['detail']}")
        for line in r.get("more", []):
            print(f"{'':<{width + 19}}{line}")
        if verbose:
            print(f"{'':<{width + 19}}cases: {'; '.join(r['cases']) or 'none'}")
            for err, what in r["outputs"]:
                print(f"{'':<{width + 19}}{'ok  ' if err <= TOLERANCE else 'BAD '}{what}")
    counts = {s: sum(r["status"] == s for r in report) for s in ("passed", "wrong", "not implemented", "no check")}
    passed = counts["passed"] == len(report)
    summary = f"{counts['passed']} of {len(report)} exercises passed" + "".join(
        f", {n} {s}" for s, n in counts.items() if s != "passed" and n)
    print(f"\n{summary} ({time.perf_counter() - t0:.1f} s)")
    if json_path:
        Path(json_path).write_text(json.dumps({"passed": passed, "summary": summary, "exercises": [
            {k: r[k] for k in ("name", "status", "detail")} for r in report]}, indent=1) + "\n", encoding="utf-8")
    return 0 if passed else 1
