"""Imports under srpo/ run downhill: no module imports one of a higher layer.

Layers, lowest first (a module may import its own layer and the ones below):

0. maths: ``srpo.direct_align``, ``schedules``, ``srp``, ``losses``, ``noise`` (torch and the
   standard library only);
1. plumbing and plain data: ``srpo.io``, ``config``, ``artifacts``, ``prompts``, ``published``, ``cache``;
2. ``srpo.models``; 3. ``srpo.rewards``; 4. ``srpo.training``;
5. ``srpo.evaluation`` and ``srpo.world`` (same layer).

Every import is read with ``ast``, at module level and inside functions alike (a lazy import still
runs up the stack when it runs). There are no exceptions: the built-in registry
(``srpo.published``) names the builders that live above it as ``"module:function"`` strings,
imported when a name is first resolved; :func:`test_registered_builders_exist_and_sit_above_the_registry`
checks those strings instead. Nothing under srpo/ may import ZenML or the project's ZenML layers
(``steps``, ``pipelines``, ``materializers``).
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
    ("plumbing", {"srpo", "srpo.io", "srpo.config", "srpo.artifacts", "srpo.prompts", "srpo.published",
                  "srpo.cache"}),
    ("models", {"srpo.models"}),
    ("rewards", {"srpo.rewards"}),
    ("training", {"srpo.training"}),
    ("evaluation/world", {"srpo.evaluation", "srpo.world"}),
]
#: Allowed upward imports: (importer, imported) -> why. Keep it empty; a new entry needs its reason.
EXCEPTIONS: dict[tuple[str, str], str] = {}
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


def test_registered_builders_exist_and_sit_above_the_registry():
    """The registry's ``"module:function"`` builders import and are callable (a typo would only show at
    first use otherwise); they live in the family that loads them, above ``srpo.published``."""
    from srpo.published import _REGISTRY

    for entry in _REGISTRY.values():
        if not isinstance(entry.builder, str):
            continue
        module, _, function = entry.builder.partition(":")
        assert callable(getattr(importlib.import_module(module), function, None)), (
            f"builtin {entry.kind} {entry.name!r}: builder {entry.builder!r} is not a function")
        assert layer_of(module) > layer_of("srpo.published"), entry.builder


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
