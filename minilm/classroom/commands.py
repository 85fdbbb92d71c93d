"""``python -m minilm exercise list / make / check``: the classroom's commands, wired to the modules that do the work.

    list    the exercises (minilm.classroom.exercises) and the cases that grade each (minilm.classroom.selfcheck)
    make    a student copy, or with --teacher the answer key (minilm.classroom.exercises.make)
    check   grade a copy from the teacher's checkout (minilm.classroom.grading.check)
"""

from __future__ import annotations

import os
from pathlib import Path

from minilm.classroom.exercises import find_exercises, make
from minilm.classroom.grading import check, checks_of
from minilm.classroom.selfcheck import exercise_cases
from minilm.training.paths import output_dir, output_file


def cmd_list(args) -> int:
    exercises = find_exercises()
    try:
        checked = exercise_cases()
    except RuntimeError as e:
        print(f"minilm exercise list: error: {e}")
        return 2
    print(f"{'exercise':<26} {'where':<30} checked by")
    for e in exercises:
        where = f"{e.path}:{e.line}"
        print(f"{e.name:<26} {where:<30} {'; '.join(checked.get(e.name, [])) or '(no registered case calls it)'}")
    print(f"{len(exercises)} exercises")
    return 0


def cmd_make(args) -> int:
    try:
        dest = output_dir(args.dir, "exercise make DIR")
        chosen = make(dest, args.only, args.force, teacher=args.teacher, cases=checks_of(find_exercises()))
    except ValueError as e:
        print(f"minilm exercise make: error: {e}")
        return 2
    what = "in the answer key" if args.teacher else "stubbed"
    print(f"wrote {args.dir}: {len(chosen)} exercise{'s' if len(chosen) != 1 else ''} {what} "
          f"({', '.join(e.name for e in chosen)})")
    return 0


def cmd_check(args) -> int:
    try:
        if not Path(args.dir).is_dir():
            raise ValueError(f"exercise check DIR: {args.dir} is not a folder (give the student copy's folder)")
        if args.json:
            output_file(args.json, "--json")
    except ValueError as e:
        print(f"minilm exercise check: error: {e}")
        return 2
    return check(Path(args.dir), args.only, timeout=args.timeout, verbose=args.verbose, json_path=args.json,
                 workers=args.jobs, fast=args.fast)


def add_exercise_parser(sub) -> None:
    """The ``exercise`` command and its subcommands list, make, check."""
    p = sub.add_parser("exercise", help="classroom exercises: list them, make a student copy, grade one")
    ex = p.add_subparsers(dest="action", required=True)
    ex.add_parser("list", help="list the exercises and the checks that grade them").set_defaults(fn=cmd_list)
    only = dict(nargs="+", metavar="NAME", help="only these exercises (names or module names)")
    m = ex.add_parser("make", help="write a student copy: package with stubs, notebooks, README")
    m.add_argument("dir")
    m.add_argument("--only", **only)
    m.add_argument("--force", action="store_true", help="overwrite DIR/minilm if it exists")
    m.add_argument("--teacher", action="store_true",
                   help="write the answer key: nothing stubbed, notebooks with their solution cells and outputs")
    m.set_defaults(fn=cmd_make)
    c = ex.add_parser("check", help="grade a student copy; exit status 0 when every exercise passes")
    c.add_argument("dir")
    c.add_argument("--only", **only)
    c.add_argument("--timeout", type=float, default=120.0, help="seconds allowed per exercise (default 120)")
    c.add_argument("-j", "--jobs", type=int, default=min(4, os.cpu_count() or 1),
                   help="grading processes run in parallel (default: the number of cores, at most 4)")
    c.add_argument("--fast", action="store_true",
                   help="skip the finite differences: only compare every output with the reference's")
    c.add_argument("-v", "--verbose", action="store_true", help="print every checked output's error")
    c.add_argument("--json", metavar="FILE", help="also write the grades to FILE as JSON (for an autograder)")
    c.set_defaults(fn=cmd_check)
