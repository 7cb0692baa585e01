"""Imports under srpo/ run downhill: no module imports one of a higher layer.

Layers, lowest first (a module may import its own layer and the ones below):

0. maths: ``srpo.direct_align``, ``schedules``, ``srp``, ``losses``, ``noise`` (torch and the
   standard library only);
1. plumbing and plain data: ``srpo.io``, ``config``, ``artifacts``, ``prompts``, ``edit_data``, ``published``,
   ``cache``, ``image_stats``, and the shapes world's scenes and pixel grader (``srpo.world.shapes``, ``grader``,
   ``scoring``, ``edits``: plain tensor code over images and captions, which the score-only rewards use);
2. ``srpo.models``; 3. ``srpo.rewards``; 4. ``srpo.training``;
5. ``srpo.evaluation`` and the rest of ``srpo.world`` (same layer).

Every import is read with ``ast``, at module level and inside functions alike (a lazy import still
runs up the stack when it runs), and the same imports may form no cycle. A ``"srpo.x:function"``
string is an import that runs later (``importlib``): it may not name a module of a higher layer
either. Registries below the code they list get it registered from above (``srpo.published``'s
builders, ``srpo.rewards.scores``' metric scorer). Nothing under srpo/ may import ZenML or the
project's ZenML layers (``steps``, ``pipelines``, ``materializers``).
"""

from __future__ import annotations

import ast
import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRPO = ROOT / "srpo"

MATHS = {"srpo.direct_align", "srpo.schedules", "srpo.srp", "srpo.losses", "srpo.noise"}
LAYERS: list[tuple[str, set[str]]] = [  # (layer name, module or package prefixes), lowest first
    ("maths", MATHS),
    ("plumbing", {"srpo", "srpo.io", "srpo.config", "srpo.artifacts", "srpo.prompts", "srpo.edit_data",
                  "srpo.published", "srpo.cache", "srpo.image_stats", "srpo.world.shapes", "srpo.world.grader", "srpo.world.scoring",
                  "srpo.world.edits"}),
    ("models", {"srpo.models"}),
    ("rewards", {"srpo.rewards"}),
    ("training", {"srpo.training"}),
    ("evaluation/world/export", {"srpo.evaluation", "srpo.world", "srpo.export"}),
]
#: Allowed upward imports: (importer, imported) -> why. Keep it empty; a new entry needs its reason.
EXCEPTIONS: dict[tuple[str, str], str] = {}
#: Files allowed to hold ``"module:function"`` strings of a higher layer -> why. Remove an entry when its strings go.
UPWARD_NAME_EXCEPTIONS: dict[str, str] = {}
#: Import cycles allowed for now: the set of modules in the cycle -> why. Remove an entry when its cycle goes.
KNOWN_CYCLES: dict[frozenset[str], str] = {}
#: ``"srpo.a.b:function"`` (the form importlib-based registries resolve).
_NAMED_FUNCTION = re.compile(r"\b(srpo(?:\.\w+)+):\w+")
FORBIDDEN_TOP = {"zenml", "steps", "pipelines", "materializers"}
#: Outside the standard library, what a maths module may import.
MATHS_THIRD_PARTY = {"torch"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    """The index in ``LAYERS`` of ``module``: the longest matching prefix decides."""
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_layers.py")
    return best


def imports_of(path: Path) -> list[tuple[int, str]]:
    """``(line, imported module)`` for every import statement in ``path``, at any depth.

    ``from a import b`` yields ``a.b`` when ``b`` is a module of the package, else ``a``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                is_module = base.startswith("srpo") and (
                    (ROOT / Path(*candidate.split("."))).is_dir() or (ROOT / Path(*candidate.split("."))).with_suffix(".py").is_file())
                found.append((node.lineno, candidate if is_module else base))
    return list(dict.fromkeys(found))  # `from a import b, c` once per module it names


def srpo_files() -> list[Path]:
    return sorted(SRPO.rglob("*.py"))


def test_every_module_is_in_a_layer():
    for path in srpo_files():
        layer_of(module_name(path))


def test_no_import_runs_up_the_layers():
    broken = []
    for path in srpo_files():
        importer = module_name(path)
        own = layer_of(importer)
        for line, target in imports_of(path):
            if target.split(".")[0] != "srpo" or (importer, target) in EXCEPTIONS:
                continue
            if layer_of(target) > own:
                broken.append(f"{path.relative_to(ROOT)}:{line}: {importer} (layer {LAYERS[own][0]}) imports "
                              f"{target} (layer {LAYERS[layer_of(target)][0]}, higher): move the shared piece "
                              "down, or pass it in from above")
    assert not broken, "imports that run up the layers:\n" + "\n".join(broken)


def test_maths_modules_import_only_torch_and_the_standard_library():
    broken = []
    for path in srpo_files():
        importer = module_name(path)
        if importer not in MATHS:
            continue
        for line, target in imports_of(path):
            top = target.split(".")[0]
            if top in sys.stdlib_module_names or top in MATHS_THIRD_PARTY or top == "__future__" or target in MATHS:
                continue
            broken.append(f"{path.relative_to(ROOT)}:{line}: maths module {importer} imports {target}: "
                          f"maths modules import only {sorted(MATHS_THIRD_PARTY)}, the standard library and each other")
    assert not broken, "\n".join(broken)


def test_nothing_under_srpo_imports_zenml_or_the_zenml_layers():
    broken = [f"{path.relative_to(ROOT)}:{line}: {module_name(path)} imports {target}: srpo/ is a plain library; "
              "the ZenML side (steps, pipelines, materializers) calls it, never the other way"
              for path in srpo_files() for line, target in imports_of(path) if target.split(".")[0] in FORBIDDEN_TOP]
    assert not broken, "\n".join(broken)


def test_the_checker_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
    """The reader itself: a lazy import inside a function and a relative import are both found."""
    package = tmp_path / "srpo" / "models"
    package.mkdir(parents=True)
    (tmp_path / "srpo" / "training").mkdir()
    (tmp_path / "srpo" / "training" / "trainer.py").write_text("")
    source = package / "thing.py"
    source.write_text("import torch\n\ndef f():\n    from srpo.training import trainer\n    from ..world import x\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    targets = [target for _, target in imports_of(source)]
    assert targets == ["torch", "srpo.training.trainer", "srpo.world"]
    assert layer_of("srpo.training.trainer") > layer_of("srpo.models.thing")


def import_graph() -> dict[str, set[str]]:
    """Module -> the srpo modules it imports (every import statement, at any depth)."""
    modules = {module_name(path): path for path in srpo_files()}
    return {name: {target for _, target in imports_of(path) if target in modules and target != name}
            for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_no_import_cycle_under_srpo():
    """No two modules import each other, directly or round a longer loop (lazy imports included)."""
    found = [c for c in cycles(import_graph()) if frozenset(c) not in KNOWN_CYCLES]
    assert not found, "import cycles (break each: move the shared piece down, or pass it in):\n" + "\n".join(
        " <-> ".join(sorted(c)) for c in found)
    stale = [sorted(c) for c in KNOWN_CYCLES if not any(frozenset(f) == c for f in cycles(import_graph()))]
    assert not stale, f"KNOWN_CYCLES lists cycles that are gone: remove {stale}"


def named_functions(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` for every ``"srpo.x:function"`` in a string of ``path`` (f-strings read with
    their fields as text)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "X" for v in node.values)
        else:
            continue
        found += [(node.lineno, m.group(1)) for m in _NAMED_FUNCTION.finditer(text)]
    return found


def test_no_named_function_points_up_the_layers():
    """A ``"module:function"`` string is resolved by importlib later: the same rule as an import."""
    broken = []
    for path in srpo_files():
        where = path.relative_to(ROOT).as_posix()
        if where in UPWARD_NAME_EXCEPTIONS:
            continue
        own = layer_of(module_name(path))
        for line, target in named_functions(path):
            if layer_of(target) > own:
                broken.append(f"{where}:{line}: names {target} (layer {LAYERS[layer_of(target)][0]}) from layer "
                              f"{LAYERS[own][0]}: register it from above, or move the code down")
    assert not broken, "module:function strings that point up the layers:\n" + "\n".join(broken)
    for where in UPWARD_NAME_EXCEPTIONS:  # an exception whose strings are gone is removed with them
        path = ROOT / where
        assert path.is_file() and any(layer_of(t) > layer_of(module_name(path)) for _, t in named_functions(path)), (
            f"{where} names nothing above its layer any more: remove it from UPWARD_NAME_EXCEPTIONS")


def test_the_checkers_see_cycles_and_named_functions(tmp_path, monkeypatch):
    """The readers themselves: a loop through a lazy import, and module:function in plain and f-strings."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []
    package = tmp_path / "srpo" / "rewards"
    package.mkdir(parents=True)
    source = package / "thing.py"
    source.write_text('A = "srpo.world.report:make"\nB = f"srpo.evaluation.metrics:{A}_x"\nC = "no:srpo"\n')
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert named_functions(source) == [(1, "srpo.world.report"), (2, "srpo.evaluation.metrics")]


def test_every_builtin_has_its_builder_once_its_family_is_imported():
    """``srpo.published`` declares the names; the family modules above it provide the builders."""
    import srpo.evaluation.metrics  # noqa: F401
    import srpo.models.tiny  # noqa: F401
    import srpo.models.tiny_families  # noqa: F401
    import srpo.rewards  # noqa: F401
    from srpo.published import _REGISTRY

    for entry in _REGISTRY.values():
        assert callable(entry.builder), f"builtin {entry.kind} {entry.name!r} has no builder"
        assert layer_of(entry.builder.__module__) >= layer_of("srpo.published"), entry


#: Repeats ``duplicates`` still lists, by file pair, each with why it stays for now. Remove an entry
#: when its repeat is gone; a pair not listed here fails the test.
KNOWN_REPEATS: dict[tuple[str, str], str] = {
    ("world/generator.py", "world/reward.py"): "two configs' field lists (steps, batch_size, learning_rate...): "
                                               "alike in shape only, different settings",
    ("evaluation/metrics/imagereward.py", "evaluation/metrics/imagereward.py"):
        "the checkpoint key map and its inverse: one table serving both needs the forward map's strict suffixes "
        "rewritten; to do with the metric's owner",
    ("evaluation/config.py", "evaluation/config.py"): "the hacking and style studies' rater fields (boilerplate)",
}
_ROW = re.compile(r"^D\d+ (\S+?):\d+-\d+ ~ (\S+?):\d+-\d+")


def test_no_block_of_six_lines_repeats_inside_srpo():
    """``duplicates`` (a tool on some machines, not a package) finds no 6+ line repeat in srpo/ but the
    ones listed, with their reasons, in ``KNOWN_REPEATS``."""
    tool = shutil.which("duplicates")
    if tool is None:
        pytest.skip("the duplicates command is not on PATH")
    report = subprocess.run([tool, "--repo", str(SRPO), "--most", "200", "--seconds", "120"], capture_output=True,
                            text=True, timeout=240, check=True).stdout
    rows = [m.groups() for m in map(_ROW.match, report.splitlines()) if m]
    new = [pair for pair in rows if pair not in KNOWN_REPEATS and pair[::-1] not in KNOWN_REPEATS]
    assert not new, f"blocks of 6+ lines repeated inside srpo/ (serve both from one piece of code):\n{report}"
    assert "incomplete:" not in report, report
