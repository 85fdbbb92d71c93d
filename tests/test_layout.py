"""The package's layout: imports point down, and no module imports itself back through others.

Layers, from the bottom (a module may import its own layer's modules and the layers below):

    0  the top of minilm/: primitives, building blocks, models, optim, generate, translate, gradcheck
       (and minilm.tasks, the generated data sets, which import only one another)
    1  minilm.cases (registered gradient checks), minilm.fast (fast paths), minilm.hub (GPT-2 files),
       minilm.training (the loop)
    2  minilm.classroom (exercises and grading)
    3  minilm.cli, minilm.__main__ (the command line: wiring only)
"""

import ast
from pathlib import Path

import minilm

PACKAGE = Path(minilm.__file__).resolve().parent


def modules() -> dict[str, Path]:
    return {".".join(("minilm", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__"): p
            for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def imports(path: Path, name: str) -> set[str]:
    """Every minilm module ``path`` imports, at the top or inside a function."""
    found, package = set(), name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("minilm")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
            if base.startswith("minilm"):
                found |= {f"{base}.{a.name}" for a in node.names}
    known = modules()
    resolved = set()
    for f in found:  # "minilm.training.adapters.load_run" -> "minilm.training.adapters"
        while f and f not in known:
            f = f.rsplit(".", 1)[0] if "." in f else ""
        if f and f != name and f != "minilm":
            resolved.add(f)
    return resolved


def layer(name: str) -> int:
    parts = name.split(".")
    if len(parts) == 2 and parts[1] in ("cli", "__main__"):
        return 3
    if len(parts) >= 2 and parts[1] == "classroom":
        return 2
    if len(parts) >= 2 and parts[1] in ("cases", "fast", "hub", "training"):
        return 1
    return 0


GRAPH = {name: imports(path, name) for name, path in modules().items()}


def test_imports_point_down():
    upward = [(a, b) for a, deps in GRAPH.items() for b in deps if layer(b) > layer(a)]
    assert not upward, "imports that point up: " + ", ".join(f"{a} -> {b}" for a, b in upward)


def test_the_layers_below_the_machinery_stay_apart():
    """The machinery subpackages of one layer do not lean on each other, except the training loop on the fast
    paths (--fast) and on the GPT-2 reader (--init-from)."""
    allowed = {("training", "fast"), ("training", "hub")}
    crossing = [(a, b) for a, deps in GRAPH.items() for b in deps
                if layer(a) == layer(b) == 1 and a.split(".")[1] != b.split(".")[1]
                and (a.split(".")[1], b.split(".")[1]) not in allowed]
    assert not crossing, ", ".join(f"{a} -> {b}" for a, b in crossing)


def test_no_import_cycle():
    state, cycle = {}, []

    def visit(n, path):
        state[n] = "open"
        for m in sorted(GRAPH.get(n, ())):
            if state.get(m) == "open":
                cycle.append(path[path.index(m):] + [m] if m in path else [n, m])
                return True
            if m not in state and visit(m, path + [m]):
                return True
        state[n] = "done"
        return False

    for n in sorted(GRAPH):
        if n not in state and visit(n, [n]):
            break
    assert not cycle, "import cycle: " + " -> ".join(cycle[0])


def test_the_checker_sees_a_planted_cycle_and_an_upward_import():
    global GRAPH
    saved = GRAPH
    try:
        GRAPH = {**saved, "minilm.linear": saved["minilm.linear"] | {"minilm.training.loop"}}
        try:
            test_imports_point_down()
        except AssertionError as e:
            assert "minilm.linear -> minilm.training.loop" in str(e)
        else:
            raise AssertionError("an upward import was not caught")
        GRAPH = {**saved, "minilm.softmax": saved["minilm.softmax"] | {"minilm.attention"}}
        try:
            test_no_import_cycle()
        except AssertionError as e:
            assert "import cycle" in str(e)
        else:
            raise AssertionError("a cycle was not caught")
    finally:
        GRAPH = saved
