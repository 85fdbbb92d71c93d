"""Classroom exercises: student copies of the package, and their grading.

Every function body that a student can write is marked by the two lines
``### BEGIN SOLUTION`` and ``### END SOLUTION`` around the solution (the
markers of nbgrader), each on a line of its own.  One exercise is one function holding such a
region, named after it: ``linear_backward``, ``attention_forward``,
``mha_backward``; a model's bare ``forward`` / ``backward`` takes the module's
name, ``ngram_backward``.  The regions are found in the source, so a module
that gains markers gains exercises; ``python -m minilm exercise list`` lists them.

``exercise make DIR`` writes a copy of the package in which each chosen region
is replaced by a ``raise NotImplementedError`` whose message gives the formula
(the function's docstring), the section of the text and the shapes the rest of
the function expects.  The markers stay, so the student sees where to write.
``exercise check DIR`` grades such a copy (see minilm.classroom.grading).

Notebooks (notebooks/*.ipynb) get student versions too.  In a notebook, a code
cell tagged ``solution`` (or with nbgrader's ``"solution": true``) is replaced
by a stub, or only its marked regions are if it has markers; every output is
cleared (outputs give answers away); a notebook with nothing to strip is copied
with a note at its top.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
PACKAGE = Path(__file__).resolve().parents[1]  # the reference package: the one running this code
MANIFEST = "exercises.json"  # written by make into DIR: the exercises handed out, graded by default by check
STUB_COMMENT = "# YOUR CODE HERE (replace the raise below)"


@dataclass(frozen=True)
class Region:
    """The lines of one marked region: ``begin`` and ``end`` are the 0-based indices of the marker lines."""

    function: str  # the name of the innermost function around it ("" at module level)
    begin: int
    end: int
    indent: str


@dataclass(frozen=True)
class Exercise:
    name: str  # what teachers and students type: linear_backward, ngram_forward
    module: str  # dotted, inside the package: "linear", "cases.ops"
    function: str
    line: int  # 1-based line of the function's first BEGIN marker

    @property
    def path(self) -> str:
        return "minilm/" + self.module.replace(".", "/") + ".py"


def find_regions(source: str) -> list[Region]:
    """The marked regions of a source file, in order; ValueError on unbalanced markers."""
    lines = source.splitlines()
    regions, start = [], None
    for i, line in enumerate(lines):
        if line.strip() == BEGIN:
            if start is not None:
                raise ValueError(f"line {i + 1}: {BEGIN} inside the region opened at line {start + 1}")
            start = i
        elif line.strip() == END:
            if start is None:
                raise ValueError(f"line {i + 1}: {END} without a {BEGIN} before it")
            indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
            regions.append(Region(_enclosing_function(lines, start, len(indent)), start, i, indent))
            start = None
    if start is not None:
        raise ValueError(f"line {start + 1}: {BEGIN} is never closed by {END}")
    return regions


def _enclosing_function(lines: list[str], i: int, indent: int) -> str:
    for line in reversed(lines[:i]):
        m = re.match(r"(\s*)(?:async\s+)?def\s+(\w+)", line)
        if m and len(m.group(1)) < indent:
            return m.group(2)
    return ""


def module_files(package: Path = PACKAGE) -> dict[str, Path]:
    """{dotted module name: path} for every .py file of the package, in a stable order."""
    files = sorted(p for p in package.rglob("*.py") if "__pycache__" not in p.parts)
    return {".".join(p.relative_to(package).with_suffix("").parts): p for p in files}


def find_exercises(package: Path = PACKAGE) -> list[Exercise]:
    """One exercise per function holding a marked region, in file order."""
    found = []  # (module, function, line)
    for module, path in module_files(package).items():
        try:
            regions = find_regions(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        for r in regions:
            if not any(m == module and f == r.function for m, f, _ in found):
                found.append((module, r.function, r.begin + 1))
    short = [_short_name(m, f) for m, f, _ in found]
    return [Exercise(s if short.count(s) == 1 else m.replace(".", "_") + "_" + f.lstrip("_"), m, f, line)
            for s, (m, f, line) in zip(short, found, strict=True)]


def _short_name(module: str, function: str) -> str:
    base = module.split(".")[-1]
    if not function:
        return base
    f = function.lstrip("_")
    return f if "_" in f else f"{base}_{f}"  # a bare forward/backward takes the module's name


def select(exercises: list[Exercise], only: list[str] | None) -> list[Exercise]:
    """The exercises named in ``only``: exercise names, module names or a name's first words ("gelu" for
    gelu_backward), separated by spaces or commas; all exercises if None."""
    if not only:
        return list(exercises)
    wanted = [w for item in only for w in item.replace(",", " ").split()]
    picked = []
    for w in wanted:
        hits = [e for e in exercises if w in (e.name, e.module, e.module.split(".")[-1]) or e.name.startswith(w + "_")]
        if not hits:
            names = ", ".join(e.name for e in exercises)
            raise ValueError(f"no exercise or module named {w!r}; the exercises are: {names}")
        picked += [e for e in hits if e not in picked]
    return [e for e in exercises if e in picked]  # in file order


# ---------------------------------------------------------------- hints and stubs


def hint(ex: Exercise, source: str) -> str:
    """The message of the stub: formula (the docstring), section of the text, what the rest of the code uses."""
    tree = ast.parse(source)
    regions = [r for r in find_regions(source) if r.function == ex.function]
    fn = _function_node(tree, ex.function, regions[0].begin + 1) if ex.function else None
    doc = (ast.get_docstring(fn) if fn else None) or ""
    sections = _sections(doc, ast.get_docstring(tree) or "", ex.function)
    lines = [f"{ex.name}{' (' + ', '.join(sections) + ')' if sections else ''} is not written yet: "
             f"write the region between the markers in {ex.path}"]
    doc_lines = [d.rstrip() for d in doc.splitlines() if d.strip()]
    if doc_lines:
        lines.append("following its docstring:")
        lines += ["    " + d for d in doc_lines]
    unpacked = _unpacked_before(fn, regions[0].begin + 1) if fn else []
    if unpacked:
        lines.append("Before the region: " + "; ".join(unpacked) + ".")
    helpers = _helpers(source, regions)
    if helpers:
        lines.append("Helpers it may call: " + ", ".join(helpers) + ".")
    needs = _needed_after(source, fn, regions) if fn else []
    if needs:
        lines.append("The code after the region uses " + ", ".join(needs) + ".")
    return "\n".join(lines)


def _unpacked_before(fn, line: int) -> list[str]:
    """'q, k, v = cache' for each tuple unpacking before ``line`` in ``fn`` (what the cache holds)."""
    found = []
    for node in fn.body:
        if node.lineno >= line:
            break
        if (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Tuple)
                and isinstance(node.value, ast.Name | ast.Attribute | ast.Subscript)):
            found.append(ast.unparse(node).replace("(", "").replace(")", ""))
    return found


def _helpers(source: str, regions: list[Region]) -> list[str]:
    """The package's functions called in the regions, each with the module it comes from."""
    tree = ast.parse(source)
    imported = {a.asname or a.name: node.module for node in tree.body if isinstance(node, ast.ImportFrom)
                and (node.module or "").startswith("minilm") for a in node.names}
    local = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    lines = source.splitlines()
    body = textwrap.dedent("\n".join(ln for r in regions for ln in lines[r.begin + 1 : r.end]))
    try:
        calls = [n.func.id for n in ast.walk(ast.parse(body))
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    except SyntaxError:
        return []
    out = []
    for name in dict.fromkeys(calls):
        if name in imported:
            out.append(f"{name} ({imported[name]})")
        elif name in local:
            out.append(f"{name} (this module)")
    return out


def _function_node(tree: ast.AST, name: str, line: int):
    """The innermost function called ``name`` whose lines hold ``line`` (1-based)."""
    best = None
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            if node.lineno <= line <= node.end_lineno and (best is None or node.lineno > best.lineno):
                best = node
    return best


def _sections(doc: str, module_doc: str, function: str) -> list[str]:
    """§ references: the function's docstring's, else the module docstring's clause naming it, else all."""
    def refs(text):
        return list(dict.fromkeys(re.findall(r"§\d+(?:\.\d+)*", text)))

    if refs(doc):
        return refs(doc)
    base = re.sub(r"_(forward|backward)$", "", function.lstrip("_"))
    pattern = re.compile(re.escape(base).replace("_", "[-_ ]"), re.IGNORECASE) if base else None
    for clause in re.split(r"[;.]\s|\n\s*\n", module_doc):
        if pattern and pattern.search(clause) and refs(clause):
            return refs(clause)
    return refs(module_doc)


def _needed_after(source: str, fn, regions: list[Region]) -> list[str]:
    """Names assigned in the regions and read after the last one, with the shape from their shape comment."""
    lines = source.splitlines()
    body = [ln for r in regions for ln in lines[r.begin + 1 : r.end]]
    try:
        region_tree = ast.parse(textwrap.dedent("\n".join(body)))
    except SyntaxError:
        return []
    stored, filled = set(), {}
    for node in ast.walk(region_tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            stored.add(node.id)
        elif (isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store) and isinstance(node.value, ast.Name)
              and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str)):
            filled.setdefault(node.value.id, []).append(node.slice.value)
    end = regions[-1].end + 1  # 1-based line of the last END marker
    later = sorted((n for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
                    and n.lineno > end), key=lambda n: (n.lineno, n.col_offset))
    out = []
    for name in dict.fromkeys(n.id for n in later):
        if name in stored:
            shape = _shape_of(name, body)
            out.append(f"{name} {shape}" if shape else name)
        elif name in filled:
            out.append(f"{name} with keys " + ", ".join(dict.fromkeys(filled[name])))
    return out


def _shape_of(name: str, body: list[str]) -> str | None:
    """The shape of ``name`` in the comment of the last line assigning it: '# (..., Din)',
    '# a x b -> (..., Din)', or one shape per target: 'dx, dW = ...  # (B, D), (D, Hd)'."""
    for line in reversed(body):
        code, _, comment = line.partition("  #")
        try:
            node = ast.parse(code.strip()).body[0] if comment else None
        except (SyntaxError, IndexError):
            continue
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            names = [t.id if isinstance(t, ast.Name) else None
                     for t in (target.elts if isinstance(target, ast.Tuple) else [target])]
            if name in names:
                shapes = re.findall(r"\([^()]*\)", comment.rsplit("->", 1)[-1])
                k = names.index(name)
                if len(shapes) == len(names):
                    return shapes[k]
                if shapes and (k == 0 or re.search(r"\beach\b", comment)):
                    return shapes[0]
    return None


def _literal(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def stub_lines(message: str, indent: str) -> list[str]:
    """The lines that replace a region: a comment and a raise of NotImplementedError(message)."""
    parts = message.split("\n")
    out = [indent + STUB_COMMENT, indent + "raise NotImplementedError("]
    out += [indent + "    " + _literal(p + "\n" if i < len(parts) - 1 else p) for i, p in enumerate(parts)]
    return out + [indent + ")"]


def student_source(source: str, exercises: list[Exercise]) -> str:
    """``source`` with every region of the given exercises (all of this module's) replaced by its stub."""
    lines = source.splitlines()
    stubs = {e.function: hint(e, source) for e in exercises}
    for r in reversed(find_regions(source)):
        if r.function in stubs:
            lines[r.begin + 1 : r.end] = stub_lines(stubs[r.function], r.indent)
    return "\n".join(lines) + "\n"


def restore_regions(student: str, reference: str, keep: str | None = None) -> str:
    """``student`` with each region's body taken from ``reference`` (matched by function and order),
    except the regions of function ``keep``.  Regions that cannot be matched are left as they are."""
    ref_lines = reference.splitlines()
    bodies = {}
    for r in find_regions(reference):
        bodies.setdefault(r.function, []).append((r.indent, ref_lines[r.begin + 1 : r.end]))
    lines = student.splitlines()
    regions = find_regions(student)
    for r in reversed(regions):
        if r.function == keep or r.function not in bodies:
            continue
        k = sum(1 for q in regions if q.function == r.function and q.begin < r.begin)
        if k < len(bodies[r.function]):
            indent, body = bodies[r.function][k]
            lines[r.begin + 1 : r.end] = [r.indent + b[len(indent):] if b.startswith(indent) else b for b in body]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- notebooks

SETUP_CELL = """\
# Student copy: import the minilm of this copy (the one you edit), not an installed one.
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path.cwd().parent))
import minilm  # noqa: E402

if pathlib.Path(minilm.__file__).resolve().parent != (pathlib.Path.cwd().parent / "minilm").resolve():
    raise RuntimeError(f"this notebook imports {minilm.__file__}, not the copy's minilm: start Jupyter in notebooks/")

# A cell that needs a function you have not written yet prints one line naming it and stops; the notebook
# goes on (Run All reaches the end).  A later cell that reads what such a cell left unset or half-made is
# skipped with one line too.  Write the function, then run the cells again.
import ast  # noqa: E402
import builtins  # noqa: E402
import types  # noqa: E402

_unset = {}  # name -> why: the data that cells stopped by an unwritten function left unset or half-made
_before = {}  # name -> id of its value when the running cell started


def _taint(names, why):
    \"\"\"Mark as unfinished the data a stopped cell may have left unset, stale or half-filled: not modules,
    functions or builtins, nor a number, string or other value the cell assigned before it stopped.\"\"\"
    ns = get_ipython().user_ns  # noqa: F821
    for n in names:
        known = ns[n] if n in ns else getattr(builtins, n, None)
        if isinstance(known, types.ModuleType) or callable(known):
            continue
        fresh = n in ns and id(ns[n]) != _before.get(n)
        if fresh and not isinstance(known, list | dict | set) and not hasattr(known, "__array__"):
            continue  # assigned whole by this cell before it stopped (a list or an array may be half-filled)
        _unset.setdefault(n, why)


def _blocked(loads, names):
    ns = get_ipython().user_ns  # noqa: F821
    _before.clear()
    _before.update({n: id(ns[n]) for n in names if n in ns})
    for n in loads:
        if n in _unset:
            print(f"[cell skipped] it needs {n}, left unfinished above: {_unset[n]}")
            _taint(names, _unset[n])
            return True
    for n in names:
        _unset.pop(n, None)  # this cell runs: what it sets is fresh
    return False


def _skipped(e, names):
    why = (str(e).strip().splitlines() or ["a function is not written yet"])[0]
    print("[rest of this cell skipped]", why)
    _taint(names, why)
    return True


def _last(skip, value, names):
    if skip:
        return None
    try:
        return value()
    except NotImplementedError as e:
        _skipped(e, names)


class _SkipUnwritten(ast.NodeTransformer):
    \"\"\"Runs a cell as `try: <cell> except NotImplementedError: <one line>`, keeping its last value shown.\"\"\"

    def visit_Module(self, node):
        loads = sorted({n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)})
        names = sorted({n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
                       | {n.name for n in ast.walk(node) if isinstance(n, ast.FunctionDef | ast.ClassDef)})
        body, last = node.body, None
        if body and isinstance(body[-1], ast.Expr):
            body, last = body[:-1], body[-1]
        code = ast.parse(f"_skip = _blocked({loads!r}, {names!r})\\nif not _skip:\\n    try:\\n        pass\\n"
                         f"    except NotImplementedError as _e:\\n        _skip = _skipped(_e, {names!r})")
        code.body[1].body[0].body = body or [ast.Pass()]
        if last is not None:
            show = ast.parse(f"_last(_skip, lambda: None, {names!r})").body[0]
            show.value.args[1].body = last.value
            code.body.append(show)
        node.body = code.body
        return ast.fix_missing_locations(node)


get_ipython().ast_transformers.append(_SkipUnwritten())  # noqa: F821
print("minilm of this copy:", pathlib.Path(minilm.__file__).parent)"""
NOTEBOOK_STUB = 'raise NotImplementedError("this cell is yours to write: the text above says what it computes")'
ANSWER_STUB = "*Your answer here.* (The teacher's copy has one.)"
SOLUTION_TAG = "solution"


def _cell_text(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _is_solution(cell) -> bool:
    meta = cell.get("metadata", {})
    return SOLUTION_TAG in meta.get("tags", []) or bool(meta.get("nbgrader", {}).get("solution"))


def _new_cell(kind: str, source: str, cell_id: str, tags: list[str]) -> dict:
    cell = {"cell_type": kind, "id": cell_id, "metadata": {"tags": tags}, "source": source}
    return {**cell, "execution_count": None, "outputs": []} if kind == "code" else cell


def normalised(line: str) -> str:
    """A line of code without its comment and whitespace: what two copies of a statement share."""
    code = line.split("  #")[0] if not line.lstrip().startswith("#") else ""
    return "".join(code.split())


def answer_lines(exercises: list[Exercise], package: Path = PACKAGE) -> set[str]:
    """The normalised statements of the exercises' solutions that a copy must not hold: more than control
    flow, and not also in the code every copy has anyway (outside every region, fast/ left out)."""
    files, found = module_files(package), set()
    for e in exercises:
        lines = files[e.module].read_text(encoding="utf-8").splitlines()
        for r in find_regions("\n".join(lines)):
            if r.function == e.function:
                found |= {n for n in map(normalised, lines[r.begin + 1 : r.end]) if _distinctive(n)}
    return found - _public_lines(package)


_PUBLIC: dict = {}  # the last _public_lines, keyed by the sources it was computed from


def _public_lines(package: Path) -> set[str]:
    """The normalised lines of the package outside every region (what no stub removes), fast/ left out."""
    sources = tuple(path.read_text(encoding="utf-8") for module, path in module_files(package).items()
                    if module.split(".")[0] not in LEFT_OUT)
    if sources not in _PUBLIC:
        found = set()
        for text in sources:
            lines = text.splitlines()
            inside = {i for r in find_regions(text) for i in range(r.begin, r.end + 1)}
            found |= {normalised(ln) for i, ln in enumerate(lines) if i not in inside}
        _PUBLIC.clear()
        _PUBLIC[sources] = found
    return _PUBLIC[sources]


def _distinctive(code: str) -> bool:
    return len(code) >= 10 and not code.startswith(("if", "elif", "else", "for", "while", "return", "try"))


def student_notebook(nb: dict, answers: set[str] = frozenset()) -> dict:
    """A student version of a notebook (the JSON as a dict): solution cells (code or markdown) and marked
    regions stubbed, and so is a code cell holding a line of a handed-out solution (``answers``, from
    ``answer_lines``); outputs cleared (they give answers away); a first cell that imports the copy's
    package and lets every cell that needs an unwritten exercise print one line instead of stopping the
    notebook; a note on top when nothing was stubbed.  Inserted cells carry ids."""
    nb = json.loads(json.dumps(nb))  # a deep copy
    stubbed = 0
    for cell in nb.get("cells", []):
        text = _cell_text(cell)
        if cell.get("cell_type") == "code":
            cell["outputs"], cell["execution_count"] = [], None
            regions = find_regions(text)
            if regions:
                lines = text.splitlines()
                for r in reversed(regions):
                    lines[r.begin + 1 : r.end] = [r.indent + STUB_COMMENT, r.indent + NOTEBOOK_STUB]
                text, stubbed = "\n".join(lines), stubbed + 1
            elif _is_solution(cell) or any(normalised(ln) in answers for ln in text.splitlines()):
                text, stubbed = STUB_COMMENT + "\n" + NOTEBOOK_STUB, stubbed + 1
        elif _is_solution(cell):
            text, stubbed = ANSWER_STUB, stubbed + 1
        cell["source"] = text
    cells = [_new_cell("code", SETUP_CELL, "minilm-student-setup", ["student-setup"])]
    if not stubbed:
        cells.insert(0, _new_cell("markdown", (
            "*Student copy.* This notebook has no cells for you to write; it runs the package, including "
            "the functions you implement, so it works once `python -m minilm gradcheck` (run in the copy's "
            "folder) passes for them."), "minilm-student-note", ["student-setup"]))
    nb["cells"] = cells + nb.get("cells", [])
    return nb


def teacher_notebook(nb: dict) -> dict:
    """The teacher's version: every cell and output kept, a note on top saying where the answers are."""
    nb = json.loads(json.dumps(nb))
    n = sum(_is_solution(c) for c in nb.get("cells", []))
    note = (f"*Teacher's copy.* {n} cell{'s' if n != 1 else ''} tagged `{SOLUTION_TAG}` hold the answers"
            f" (the student copy replaces each by a stub)." if n else
            f"*Teacher's copy.* This notebook has no cells tagged `{SOLUTION_TAG}` yet: its student copy "
            f"is the same notebook without outputs.")
    nb["cells"] = [_new_cell("markdown", note, "minilm-teacher-note", ["teacher-note"])] + nb.get("cells", [])
    return nb


def matching_notebooks(notebooks: Path, chosen: list[Exercise], everything: bool) -> list[Path]:
    """The notebooks that use a chosen exercise's module or function (all of them when ``everything``)."""
    found = sorted(notebooks.glob("*.ipynb")) if notebooks.is_dir() else []
    if everything:
        return found
    words = {w for e in chosen for w in (e.function, "minilm." + e.module, f"import {e.module.split('.')[-1]}")}
    return [p for p in found if any(w and w in p.read_text(encoding="utf-8") for w in words)]


# ---------------------------------------------------------------- make

LEFT_OUT = ("fast",)  # subpackages a copy leaves out: minilm/fast/ holds working versions of the exercises


def companions(chosen: list[Exercise], exercises: list[Exercise], package: Path = PACKAGE) -> list[Exercise]:
    """The exercises not chosen whose solution shares a statement with a chosen one's (lstm_backward's
    ``dx, dWx, db = linear_backward(da, cache_x)`` gives away lstm_step_backward's): stubbed too, so that
    no written neighbour spells a handed-out answer out."""
    wanted = answer_lines(chosen, package)
    return [e for e in exercises if e not in chosen and answer_lines([e], package) & wanted]


def make(dest: Path, only: list[str] | None = None, force: bool = False, package: Path = PACKAGE,
         notebooks: Path | None = None, teacher: bool = False) -> list[Exercise]:
    """Write a student copy into ``dest``: the package (without minilm/fast/) with the chosen exercises and
    their companions stubbed, the matching notebooks, a README listing the exercises, and the manifest
    ``exercises.json``.  With ``teacher``, the answer key instead: the same layout and manifest with nothing
    stubbed and the notebooks whole (solution cells and outputs kept).  Returns the chosen exercises."""
    dest = Path(dest)
    exercises = find_exercises(package)
    chosen = select(exercises, only)
    hidden = [] if teacher else companions(chosen, exercises, package)
    if (dest / "minilm").exists() and not force:
        raise ValueError(f"{dest / 'minilm'} exists: choose a new directory, or pass --force to overwrite it")
    from minilm.classroom.grading import checks_of  # the cases of every exercise, run on the reference

    cases = checks_of(exercises) if package == PACKAGE else {}
    shutil.rmtree(dest / "minilm", ignore_errors=True)

    def ignore(folder, names):
        top = Path(folder).resolve() == package.resolve()
        return [n for n in names if n in ("__pycache__", ".ipynb_checkpoints") or n.endswith(".pyc")
                or (top and n in LEFT_OUT)]

    shutil.copytree(package, dest / "minilm", ignore=ignore)
    files = module_files(package)
    stubbed = chosen + hidden
    for module in [] if teacher else dict.fromkeys(e.module for e in stubbed):
        text = student_source(files[module].read_text(encoding="utf-8"), [e for e in stubbed if e.module == module])
        compile(text, str(files[module]), "exec")  # a stub must leave valid Python
        (dest / "minilm" / files[module].relative_to(package)).write_text(text, encoding="utf-8")
    root = package.parent
    for name in ("pyproject.toml", "requirements.txt"):
        if (root / name).is_file():
            shutil.copy(root / name, dest / name)
    (dest / "figures").mkdir(exist_ok=True)  # where the notebooks save their figures (../figures)
    written, answers = [], answer_lines(stubbed, package)
    for nb_path in matching_notebooks(notebooks or root / "notebooks", chosen, everything=not only):
        nb = json.loads(nb_path.read_text(encoding="utf-8"))
        nb = teacher_notebook(nb) if teacher else student_notebook(nb, answers)
        (dest / "notebooks").mkdir(exist_ok=True)
        (dest / "notebooks" / nb_path.name).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n",
                                                       encoding="utf-8")
        written.append(nb_path.name)
    manifest = {"exercises": [e.name for e in chosen], "also_stubbed": [e.name for e in hidden],
                "teacher": teacher, "notebooks": written, "cases": cases}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    (dest / "README.md").write_text(_student_readme(chosen, hidden, written, cases, teacher), encoding="utf-8")
    return chosen


def _student_readme(chosen: list[Exercise], hidden: list[Exercise], notebooks: list[str],
                    cases: dict[str, list[str]], teacher: bool) -> str:
    rows = "\n".join(f"| `{e.name}` | `{e.path}` line {e.line} | {'; '.join(cases.get(e.name, [])) or '-'} |"
                     for e in chosen)
    also = "".join(f"- `{e.name}` (`{e.path}`)\n" for e in hidden)
    nbs = "".join(f"- `notebooks/{n}`\n" for n in notebooks) or "- (none)\n"
    head = (f"""# minilm: answer key

The teacher's copy of the exercises below: the package with every solution
in place (between `{BEGIN}` and `{END}`), and the notebooks whole, their
answers in the cells tagged `solution`.  `exercise make` without `--teacher`
writes the student copy: the same files with those regions and cells stubbed.
""" if teacher else f"""# minilm: exercises

Write the body of each function below: in its file, replace the `raise
NotImplementedError(...)` between `{BEGIN}` and `{END}` by your code (leave
the two marker lines where they are).  The message of the raise gives the
formula, the section of the text, the cache entries and helpers you may use
and the shapes the rest of the function expects.
""")
    hidden_text = "" if not also else f"""
These functions are stubbed too, though not handed out, because their
solutions would show yours (write them as well, or leave them: they are not
graded, but code that calls them stops with their stub's message):

{also}"""
    return head + f"""
| exercise | where | checked by the cases |
|---|---|---|
{rows}
{hidden_text}
## Checking your work

Run the self-check from this folder (the one holding `exercises.json`):

    cd {'<this folder>'}
    python -m minilm gradcheck                  # every case
    python -m minilm gradcheck --only NAME      # an exercise, a module, or a case

Its first line is the path of the package it checks: it must be this
folder's `minilm/`.  From any other folder (`notebooks/`, or with the
`minilm` console script) Python would import another installed minilm, so
the self-check refuses and tells you to come here.  Every case compares your
backward with finite differences of your forward and runs once in float32
(outputs and gradients must keep the input's dtype); a failed gradient says
how it differs (a constant factor, a flipped sign, the rows or time steps
that are wrong, the cosine with the right answer).

Not in this copy: `minilm/fast/` (the fast paths hold working versions of
the exercises), so `python -m minilm bench` and `train --fast` are absent.

Notebooks (open them from `notebooks/`: their first cell imports this copy's
package; a cell that needs a function you have not written prints one line
naming it, and the rest of the notebook runs):
{nbs}"""


# ---------------------------------------------------------------- command line


def cmd_list(args) -> int:
    from minilm.classroom.selfcheck import exercise_cases

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
        chosen = make(Path(args.dir), args.only, args.force, teacher=args.teacher)
    except ValueError as e:
        print(f"minilm exercise make: error: {e}")
        return 2
    what = "in the answer key" if args.teacher else "stubbed"
    print(f"wrote {args.dir}: {len(chosen)} exercise{'s' if len(chosen) != 1 else ''} {what} "
          f"({', '.join(e.name for e in chosen)})")
    return 0


def cmd_check(args) -> int:
    from minilm.classroom.grading import check

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
