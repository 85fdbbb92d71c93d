"""The self-check: ``python -m minilm gradcheck`` (and the ``minilm gradcheck`` console script).

It runs the registered gradient-check cases (minilm/cases/) on the package it
is part of, and says which one: the first line is that package's path.  In a
student copy (a folder holding ``exercises.json``, written by ``exercise
make``) that must be the copy's own package; a run from inside a copy that
imports another minilm (the teacher's installed one, from the copy's
``notebooks/`` folder, or the console script) refuses with one line saying
what to run instead, so stubs can never check as passing.

Each case is one line; a case that raises (a stub's NotImplementedError, a
TypeError in a half-written backward) is that case's line, and the run goes
on.  A failed gradient gets the words of minilm.gradcheck.describe_difference
(the same words the grader prints): a constant ratio, a flipped sign, the rows
or time steps that hold the error, the cosine.
"""

from __future__ import annotations

import json
import time
import traceback
from pathlib import Path

from minilm.classroom.exercises import MANIFEST, PACKAGE, find_exercises
from minilm.gradcheck import TOLERANCE, recording


def copy_around(start: Path) -> Path | None:
    """The student copy holding ``start``: the nearest folder at or above it with an exercises.json."""
    start = Path(start).resolve()
    for d in (start, *start.parents):
        if (d / MANIFEST).is_file():
            return d
    return None


def refuse_other_package(cwd: Path, package: Path = PACKAGE) -> None:
    """ValueError (one line) when ``cwd`` is inside a student copy whose minilm is not ``package``."""
    copy = copy_around(cwd)
    if copy is not None and (copy / "minilm").resolve() != Path(package).resolve():
        raise ValueError(f"this folder is in the student copy {copy}, but the minilm imported is {package}, "
                         f"not the copy's: run `cd {copy} && python -m minilm gradcheck` to check your code")


def exercise_cases(package: Path = PACKAGE) -> dict[str, list[str]]:
    """{exercise name: the cases ("group/name") that grade it}: from the copy's manifest, written by
    ``exercise make`` from the reference (a stubbed copy cannot find them by running), else by running
    every case once on this package (minilm.classroom.grading.checks_of)."""
    manifest = Path(package).parent / MANIFEST
    if manifest.is_file():
        cases = json.loads(manifest.read_text(encoding="utf-8")).get("cases")
        if cases:
            return cases
    from minilm.classroom.grading import checks_of

    return checks_of(find_exercises(package))


def select_cases(cases: list, only: list[str] | None, mapping=exercise_cases) -> list:
    """The cases named by ``only``: an exercise name (its grading cases), a module name (the cases of its
    exercises) or a part of a case's "group/name".  ValueError when a word matches nothing."""
    if not only:
        return list(cases)
    words = [w for item in only for w in item.replace(",", " ").split()]
    exercises = find_exercises()
    chosen: set[str] = set()
    table = None
    for w in words:
        hits = {f"{c.group}/{c.name}" for c in cases if w in f"{c.group}/{c.name}"}
        named = [e for e in exercises if w in (e.name, e.module, e.module.split(".")[-1], "minilm." + e.module)]
        if named:
            table = mapping() if table is None else table
            hits |= {n for e in named for n in table.get(e.name, [])}
        if not hits:
            raise ValueError(f"--only {w!r} matches no exercise, module or case (see `python -m minilm exercise "
                             f"list` for the exercises and their cases)")
        chosen |= hits
    return [c for c in cases if f"{c.group}/{c.name}" in chosen]


def where(e: BaseException, package: Path = PACKAGE) -> str:
    """The innermost line of the package's code (not the checker's) in the traceback of ``e``."""
    found = ""
    for fr in traceback.extract_tb(e.__traceback__):
        p = Path(fr.filename).resolve()
        checker = p.relative_to(package).parts[:1] in (("cases",), ("classroom",), ("gradcheck.py",)) \
            if package in p.parents else True
        if not checker:
            found = f" (at {p.relative_to(package.parent)}:{fr.lineno} in {fr.name})"
    return found


def run(cases: list, verbose: bool = False, print=print) -> int:
    """Run ``cases``, one line each (and the feedback of each failed gradient); 1 if any failed, else 0."""
    print(f"checking the package at {PACKAGE}")
    print(f"centred differences in float64, then a float32 pass (dtypes kept); a gradient passes when its max "
          f"relative error <= {TOLERANCE:.0e}\n")
    print(f"{'group':<12} {'case':<34} {'worst gradient':<16} {'rel. error':>10}  result")
    print("-" * 84)
    failed, t0 = 0, time.perf_counter()
    for c in cases:
        with recording() as found:
            try:
                errors = c.run()
            except NotImplementedError as e:  # a stub of a student copy (minilm exercise make)
                failed += 1
                print(f"{c.group:<12} {c.name:<34} {'':<16} {'':>10}  not implemented")
                print(f"{'':<13}{(str(e).splitlines() or [''])[0]}")
                continue
            except Exception as e:  # a half-written exercise: this case fails, the others still run
                failed += 1
                msg = (str(e).strip().splitlines() or [""])[0]
                print(f"{c.group:<12} {c.name:<34} {'':<16} {'':>10}  FAIL")
                print(f"{'':<13}{type(e).__name__}: {msg}{where(e)}")
                continue
        worst = max(errors, key=errors.get)
        ok = all(e <= TOLERANCE for e in errors.values())
        failed += not ok
        print(f"{c.group:<12} {c.name:<34} {worst:<16} {errors[worst]:>10.1e}  {'pass' if ok else 'FAIL'}")
        if verbose:
            for k, e in errors.items():
                print(f"{'':<48}{k:<16} {e:>10.1e}")
        for note in dict.fromkeys(f.note for f in found) if not ok else []:
            print(f"{'':<13}{note}")
    print("-" * 84)
    print(f"{len(cases) - failed} of {len(cases)} passed in {time.perf_counter() - t0:.1f} s ({PACKAGE})")
    return 1 if failed else 0


def cmd_gradcheck(args) -> int:
    """``python -m minilm gradcheck [--only NAME ...] [-v]``."""
    from minilm.cases import all_cases

    refuse_other_package(Path.cwd())
    return run(select_cases(all_cases(), args.only), args.verbose)
