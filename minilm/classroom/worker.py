"""The grading worker: runs the gradient-check cases against one copy of the package.

minilm.classroom.grading starts it as ``python -S -B -c <this file's text> JOB.json`` in
a fresh interpreter whose PYTHONPATH starts with the copy, so that ``import
minilm`` means the copy.  It imports only the standard library and numpy, never
minilm itself, and loads the package through its own import hook:

* ``minilm`` and its modules come from the copy's directory and from nowhere
  else: a module missing from the copy is missing (-S keeps out an installed
  minilm and its import hooks);
* ``minilm.gradcheck`` and ``minilm.cases`` (the checker and the cases) come
  from the reference, so the checks are the teacher's, not the copy's;
* a module's source can be replaced by the job (the copy's file with the
  regions of the other exercises put back), so that one exercise is graded
  with every other exercise correct.

Two modes.  ``record`` (on the reference): run every case once, analytically
only (the finite differences are skipped), noting which exercise functions
each case calls and what its forward and backward returned.  ``grade`` (on a
student copy): for each exercise, import the package afresh, run its cases in
full (or, with "fast", analytically only, like ``record``), and write what the
checks measured and what the functions returned, for the parent to compare
with the reference.  Results are written as JSON lines,
arrays as .npz files (never pickles: the parent never unpickles a student's
objects).

This is a grader for honest mistakes, not a sandbox: code that sets out to
cheat can still read files.  Grade untrusted submissions in a container.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import json
import os
import sys
import traceback
from pathlib import Path

import numpy as np

TRUSTED = ("minilm.gradcheck", "minilm.cases")
COMPILED: dict = {}  # (path, source) -> code object


class Loader(importlib.abc.Loader):
    def __init__(self, path: str, source: str | None, on_code):
        self.path, self.source, self.on_code = path, source, on_code

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        source = self.source if self.source is not None else Path(self.path).read_text(encoding="utf-8")
        key = (self.path, source)
        if key not in COMPILED:  # each exercise imports the package afresh: compile each source once
            COMPILED[key] = compile(source, self.path, "exec", dont_inherit=True)
        code = COMPILED[key]
        self.on_code(module.__name__, code)
        exec(code, module.__dict__)


class Finder(importlib.abc.MetaPathFinder):
    """minilm.* from ``package`` (with ``overrides``: {module name: source}), trusted modules from ``trusted``."""

    def __init__(self, package: Path, trusted: Path, overrides: dict[str, str], on_code=lambda name, code: None):
        self.package, self.trusted, self.overrides, self.on_code = package, trusted, overrides, on_code

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "minilm" and not fullname.startswith("minilm."):
            return None
        base = self.trusted if any(fullname == t or fullname.startswith(t + ".") for t in TRUSTED) else self.package
        where = base.joinpath(*fullname.split(".")[1:])
        if (where / "__init__.py").is_file():
            origin, locations = where / "__init__.py", [str(where)]
        elif where.with_suffix(".py").is_file():
            origin, locations = where.with_suffix(".py"), None
        else:
            return None
        loader = Loader(str(origin), self.overrides.get(fullname), self.on_code)
        return importlib.util.spec_from_file_location(fullname, origin, loader=loader,
                                                      submodule_search_locations=locations)


def fresh_import(finder: Finder):
    """Forget every minilm module and import the package again through ``finder``."""
    for name in [n for n in sys.modules if n == "minilm" or n.startswith("minilm.")]:
        del sys.modules[name]
    importlib.invalidate_caches()
    return importlib.import_module("minilm")


def capture_checks(gc, captures: list, record: bool) -> None:
    """Wrap check_pair and check_model of the checker module ``gc`` so that each call appends
    {label: array} of its first analytic pass to ``captures`` ("out" or "loss", then "d" + name).
    With ``record``, the finite differences are skipped: the checks then measure nothing."""
    pair, model = gc.check_pair, gc.check_model

    def check_pair(forward, backward, *args, **kwargs):
        bound = inspect.signature(pair).bind(forward, backward, *args, **kwargs)
        inputs = bound.arguments["inputs"]
        names = bound.arguments.get("names") or [f"x{i}" for i in range(len(inputs))]
        got = {}

        def fwd(*a, **k):
            res = forward(*a, **k)
            if not got:
                got["out"] = res[0]
            return res

        def bwd(dout, cache):
            grads = backward(dout, cache)
            if len(got) == 1:
                for n, g in zip(names, grads if isinstance(grads, tuple) else (grads,), strict=False):
                    got["d" + n] = g
                captures.append(_arrays(got))
            return grads

        return pair(fwd, bwd, *args, **kwargs)

    def check_model(loss_and_grads, *args, **kwargs):
        first = []

        def lg(params):
            if first and record:
                return first[0]
            res = loss_and_grads(params)
            if not first:
                first.append(res)
                captures.append(_arrays({"loss": res[0], **{"d" + k: g for k, g in res[1].items()}}))
            return res

        return model(lg, *args, **kwargs)

    gc.check_pair, gc.check_model = check_pair, check_model
    if record:
        gc.numerical_gradient = lambda f, x, dout=1.0, h=1e-5: np.zeros_like(x)


def _arrays(values: dict) -> dict:
    """The float arrays among ``values``, copied (a later perturbation must not change them)."""
    out = {}
    for k, v in values.items():
        if v is not None and not isinstance(v, dict | list | tuple):
            a = np.array(v, copy=True)
            if np.issubdtype(a.dtype, np.floating):
                out[k] = a
    return out


def code_objects(code, found=None):
    found = [] if found is None else found
    found.append(code)
    for c in code.co_consts:
        if hasattr(c, "co_code"):
            code_objects(c, found)
    return found


def load_cases(case_modules):
    """Import the (trusted) case modules and return their registered cases."""
    cases = importlib.import_module("minilm.cases")
    for m in case_modules:
        importlib.import_module(m)
    return [c for c in cases.REGISTRY if c.run.__module__ in case_modules]


def describe(e: BaseException, package: Path) -> dict:
    """The error message and the innermost line of the copy's code where it happened."""
    where = None
    for fr in traceback.extract_tb(e.__traceback__):
        p = Path(fr.filename).resolve()
        if package in p.parents:
            where = f"{p.relative_to(package.parent)}:{fr.lineno} in {fr.name}"
    msg = str(e).strip().splitlines()
    return {"error": f"{type(e).__name__}: {msg[0] if msg else ''}"[:300], "where": where}


def reference_watch(trusted: Path, reads: list):
    """An audit hook noting every file of the reference package that is opened, but the checker's own
    (gradcheck.py, cases/): however the copy would reach the reference (an import by path, reading the
    source, another sys.path), it has to open one of its files."""
    allowed = {trusted / "gradcheck.py", trusted / "cases"}

    def hook(event, args):
        if event == "open" and isinstance(args[0], str | bytes | os.PathLike):
            p = Path(args[0].decode() if isinstance(args[0], bytes) else args[0]).resolve()
            if trusted in p.parents and not any(a == p or a in p.parents for a in allowed):
                reads.append(str(p.relative_to(trusted.parent)))

    return hook


def record(job: dict, out) -> None:
    package = Path(job["package"])
    codes: dict = {}  # exercise name -> the code object of its function

    def on_code(module, code):
        for c in code_objects(code):
            lines = [ln for _, _, ln in c.co_lines() if ln is not None]
            for e in job["exercises"]:
                name, line = e["name"], e["line"]  # line: the function's first BEGIN marker
                if ("minilm." + e["module"] == module and c.co_name == e["function"] and lines
                        and min(lines) <= line <= max(lines)):
                    prev = codes.get(name)
                    if prev is None or c.co_firstlineno > prev.co_firstlineno:  # the innermost function
                        codes[name] = c

    finder = Finder(package, package, {}, on_code)
    sys.meta_path.insert(0, finder)
    fresh_import(finder)
    captures: list = []
    capture_checks(importlib.import_module("minilm.gradcheck"), captures, record=True)
    cases_mod = importlib.import_module("minilm.cases")
    for m in cases_mod.MODULES:
        try:
            importlib.import_module(m)
        except Exception as e:  # the parent reports it for the exercises left without a check
            out.write(json.dumps({"module": m, "group": m, "name": "(import)", "called": [], "captures": [],
                                  "error": describe(e, package)}) + "\n")
    names = {c: n for n, c in codes.items()}
    arrays = {}
    for i, case in enumerate(cases_mod.REGISTRY):
        called: set = set()

        def profile(frame, event, arg, called=called):
            if event == "call" and frame.f_code in names:
                called.add(names[frame.f_code])

        captures.clear()
        sys.setprofile(profile)
        try:
            case.run()
            error = None
        except Exception as e:  # a reference case that fails is reported by the parent
            error = describe(e, package)
        finally:
            sys.setprofile(None)
        labels = []
        for j, got in enumerate(captures):
            labels.append(list(got))
            arrays.update({f"{i}_{j}_{k}": a for k, a in enumerate(got.values())})
        out.write(json.dumps({"module": case.run.__module__, "group": case.group, "name": case.name,
                              "called": sorted(called), "captures": labels, "error": error}) + "\n")
    np.savez(job["arrays"], **arrays)


def grade(job: dict, out) -> None:
    package, trusted = Path(job["package"]), Path(job["trusted"]).resolve()
    spec = importlib.machinery.PathFinder.find_spec("minilm")  # what PYTHONPATH alone resolves
    if spec is None or Path(spec.origin).resolve().parent != package:
        raise RuntimeError(f"import minilm does not resolve to {package} (got {spec and spec.origin})")
    reads: list[str] = []
    if package != trusted:
        sys.addaudithook(reference_watch(trusted, reads))
    finder = Finder(package, trusted, {})
    sys.meta_path.insert(0, finder)
    for ex in job["exercises"]:
        out.write(json.dumps({"start": ex["name"]}) + "\n")
        out.flush()
        result = {"result": ex["name"], "status": "ok", "checks": []}
        arrays = {}
        try:
            finder.overrides = {**job["overrides"], **ex["overrides"]}
            fresh_import(finder)
            captures: list = []
            gc = importlib.import_module("minilm.gradcheck")
            capture_checks(gc, captures, record=job["fast"])
            wanted = [tuple(c) for c in ex["cases"]]
            cases = load_cases(list(dict.fromkeys(m for m, _, _ in wanted)))
            todo = [c for c in cases if (c.run.__module__, c.group, c.name) in wanted]
            if not todo:
                raise RuntimeError(f"the cases {wanted} are not registered in the reference")
            for case in todo:
                captures.clear()
                check = {"case": f"{case.group}/{case.name}", "errors": {}, "captures": []}
                result["checks"].append(check)
                with gc.recording() as found:  # what differs, in the words the self-check prints
                    errors = case.run()  # with "fast", measured against no finite differences: not kept
                check["errors"] = {} if job["fast"] else {k: float(v) for k, v in errors.items()}
                check["notes"] = {} if job["fast"] else {f.name: f.note for f in found}
                for j, got in enumerate(captures):
                    check["captures"].append(list(got))
                    arrays.update({f"{len(result['checks']) - 1}_{j}_{k}": a for k, a in enumerate(got.values())})
        except NotImplementedError as e:
            result.update(status="not implemented", **describe(e, package))
        except (Exception, SystemExit) as e:
            result.update(status="error", **describe(e, package))
        if reads:
            result.update(status="error", where=None,
                          error="reads the reference package: " + ", ".join(sorted(set(reads))))
            reads.clear()
        np.savez(Path(job["arrays"]) / f"{ex['name']}.npz", **arrays)
        out.write(json.dumps(result) + "\n")
        out.flush()


def main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    job["package"] = str(Path(job["package"]).resolve())
    with open(job["results"], "a", encoding="utf-8") as out:
        (record if job["mode"] == "record" else grade)(job, out)


if __name__ == "__main__":
    main(sys.argv[1])
