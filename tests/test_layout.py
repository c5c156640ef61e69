"""The shape of the package, read from its source with ``ast`` (docs/layout.md).

Fails, naming the file and line, on:
- an import cycle between comp's modules;
- a ``_private`` name taken from another comp module (``from comp.x import _y`` or ``x._y``);
- an upward import between the layers: root utilities <- data <- train <- infer <- reports <- techniques <-
  orchestrate / serve <- cli (orchestrate and serve do not import each other);
- a function over 100 lines;
- more than 12 modules directly in ``comp/``;
- accelerate's private state reset called outside comp/accel.py (one place asks for a fresh state).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "comp"
LAYERS = {"data": 1, "train": 2, "infer": 3, "reports": 4, "techniques": 5, "orchestrate": 6, "serve": 6}
TOP = {"cli": 7, "__main__": 8}  # root modules above every package; the other root modules are layer 0
MAX_LINES = 100


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def layer(mod: str) -> tuple[int, str]:
    """(layer, package) of a comp module: root utilities are layer 0."""
    parts = mod.split(".")
    if len(parts) >= 2 and parts[1] in LAYERS:
        return LAYERS[parts[1]], parts[1]
    if len(parts) == 2 and parts[1] in TOP:
        return TOP[parts[1]], parts[1]
    return 0, "root"


def resolve(name: str, mods: dict) -> str | None:
    """The comp module an import names (``comp.data.images``), or None for a third-party one."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def imports(mod: str, path: Path, mods: dict) -> list[tuple[str, int, list[str]]]:
    """(imported comp module, line, names taken) for every import in ``path``, including those inside functions."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("comp") and (target := resolve(a.name, mods)):
                    out.append((target, node.lineno, []))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("comp") and not node.level:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                if sub in mods:  # from comp.data import images: the submodule itself
                    out.append((sub, node.lineno, []))
                elif (target := resolve(node.module, mods)):
                    out.append((target, node.lineno, [a.name]))
    return [(t, line, names) for t, line, names in out if t != mod]


def private_attribute_uses(path: Path, mods: dict) -> list[tuple[int, str]]:
    """``alias._name`` where alias is a comp module imported in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    aliases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("comp"):
            aliases |= {a.asname or a.name for a in node.names if f"{node.module}.{a.name}" in mods}
        elif isinstance(node, ast.Import):
            aliases |= {a.asname or a.name for a in node.names if a.name.startswith("comp")}
    return [(n.lineno, f"{n.value.id}.{n.attr}") for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in aliases
            and n.attr.startswith("_") and not n.attr.startswith("__")]


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: {t for t, _, _ in imports(m, p, mods)} for m, p in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    found = cycles(graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_private_name_from_another_module():
    mods, bad = modules(), []
    for mod, path in mods.items():
        rel = path.relative_to(PKG.parent)
        for target, line, names in imports(mod, path, mods):
            bad += [f"{rel}:{line}: {n} from {target}" for n in names if n.startswith("_") and not n.startswith("__")]
        bad += [f"{rel}:{line}: {what}" for line, what in private_attribute_uses(path, mods)]
    assert not bad, "private names taken from another module:\n" + "\n".join(bad)


def test_imports_run_one_way():
    mods, bad = modules(), []
    for mod, path in mods.items():
        lv, pkg = layer(mod)
        for target, line, _ in imports(mod, path, mods):
            tl, tpkg = layer(target)
            if tl > lv or (tl == lv and tpkg != pkg and lv > 0):
                bad.append(f"{path.relative_to(PKG.parent)}:{line}: {mod} ({pkg}, layer {lv}) imports {target} "
                           f"({tpkg}, layer {tl})")
    assert not bad, "imports against the layers (root <- data <- train <- infer <- reports <- techniques <- " \
                    "orchestrate/serve <- cli):\n" + "\n".join(bad)


def test_no_function_over_100_lines():
    bad = []
    for path in modules().values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_LINES:
                    bad.append(f"{path.relative_to(PKG.parent)}:{node.lineno}: {node.name} has {n} lines")
    assert not bad, f"functions over {MAX_LINES} lines:\n" + "\n".join(bad)


def test_at_most_12_modules_at_the_root():
    root = sorted(p.name for p in PKG.glob("*.py"))
    assert len(root) <= 12, f"{len(root)} modules directly in comp/: {root}"


def test_one_place_asks_accelerate_for_a_fresh_state():
    users = [f"{p.relative_to(PKG.parent)}:{i}" for p in PKG.rglob("*.py")
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if "_reset_state(" in line]
    outside = [u for u in users if not u.startswith("comp/accel.py:")]
    assert not outside, f"accelerate's state reset outside comp/accel.py: {outside}"


def test_the_checker_sees_what_it_guards(tmp_path):
    """The checks above would pass vacuously if the parser missed imports: a known edge must be found."""
    g = graph()
    assert "comp.config" in g["comp.cli"] and g["comp.train.loop"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer("comp.infer.predict") == (3, "infer") and layer("comp.runs") == (0, "root")


def test_the_trainer_is_the_fold_lifecycle_and_the_epoch():
    """comp/train/loop.py stays under 400 lines (the run is comp.train.session, a fold's parts comp.train.fold,
    validation, outputs and setup their own modules), and its step makes no host sync per micro-step: the only
    .item() is the epoch-end reduction of the summed loss."""
    src = (PKG / "train" / "loop.py").read_text(encoding="utf-8").splitlines()
    assert len(src) < 400, f"comp/train/loop.py has {len(src)} lines"
    items = [line.strip() for line in src if ".item()" in line and not line.strip().startswith("#")]
    assert len(items) == 1 and "acc.reduce" in items[0], items


# A branch on the task: an if / elif / while or a conditional expression whose test asks which task this is.
TASK_TEST = re.compile(r"multi_?label|\.task\b|\btask\s*[!=]=|\bhot is (not )?None|\.sigmoid\b|ndim\s*[!=]=\s*2")
# Tests that match the pattern but ask something else, each with what it asks.
NOT_THE_TASK = {
    "comp/data/preprocess.py": "a grey image (cv2.resize drops its channel axis)",
}
MAX_TASK_BRANCHES = 4  # 60 before comp.tasks (issue 36); it only goes down


def task_branches() -> list[str]:
    """``file:line: test`` of every branch on the task outside comp/tasks/ (the task objects own those)."""
    out = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).as_posix()
        if rel.startswith("comp/tasks/") or rel in NOT_THE_TASK:
            continue
        src = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.If, ast.IfExp, ast.While)):
                test = ast.unparse(node.test)  # (get_source_segment re-splits the file per call: seconds)
                if TASK_TEST.search(test):
                    out.append(f"{rel}:{node.lineno}: {test}")
    return out


def test_stages_ask_the_task_object_not_which_task_it_is():
    """comp.tasks owns what differs between tasks; a stage calls ``task_of(cfg)``'s methods. The branches left are
    listed on failure; a new one means a Task method is missing."""
    found = task_branches()
    assert len(found) <= MAX_TASK_BRANCHES, f"{len(found)} branches on the task:\n" + "\n".join(found)
    for seen in ('cfg.data.task == "multilabel"', "s.pool.hot is None", "y.ndim == 2", "ens.multilabel"):
        assert TASK_TEST.search(seen), seen  # the checker sees the kinds it counts
