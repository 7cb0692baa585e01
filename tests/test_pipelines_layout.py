"""``pipelines/`` holds ZenML pipelines only, and they import their steps one way: from ``steps``."""

import ast
from pathlib import Path

import pytest

PIPELINES = sorted(Path("pipelines").glob("*.py"))
STEP_MODULES = sorted(p.stem for p in Path("steps").glob("*.py") if not p.name.startswith("_"))


def is_pipeline_decorator(node: ast.expr) -> bool:
    """``@pipeline`` or ``@pipeline(...)`` (the name ``ops.pipeline`` and ``zenml`` both export)."""
    target = node.func if isinstance(node, ast.Call) else node
    return (isinstance(target, ast.Name) and target.id == "pipeline") or \
        (isinstance(target, ast.Attribute) and target.attr == "pipeline")


def non_pipeline_definitions(tree: ast.Module) -> list[str]:
    """Every module-level statement that is not an import, the docstring or a ``@pipeline`` function."""
    found = []
    for index, node in enumerate(tree.body):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str):
            continue
        if isinstance(node, ast.FunctionDef) and any(is_pipeline_decorator(d) for d in node.decorator_list):
            continue
        name = getattr(node, "name", None) or ", ".join(
            t.id for t in getattr(node, "targets", [getattr(node, "target", None)]) if isinstance(t, ast.Name))
        found.append(f"line {node.lineno}: {type(node).__name__} {name or ast.unparse(node)[:40]!r}")
    return found


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_a_pipelines_file_defines_only_pipelines(path):
    offending = non_pipeline_definitions(ast.parse(path.read_text()))
    assert not offending, f"{path} defines more than pipelines (move it to ops/, steps/ or srpo/): {offending}"


def test_the_check_names_what_is_not_a_pipeline():
    tree = ast.parse('"""doc"""\nimport x\nLIMIT = 3\n\ndef helper():\n    pass\n\n'
                     "@pipeline\ndef p():\n    pass\n\n@pipeline(enable_cache=False)\ndef q():\n    pass\n")
    offending = non_pipeline_definitions(tree)
    assert len(offending) == 2 and "LIMIT" in offending[0] and "helper" in offending[1]


def test_steps_exports_every_step_and_pipelines_import_steps_only_from_it():
    import steps

    assert sorted(steps.__all__) == STEP_MODULES
    for path in PIPELINES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("steps."):
                pytest.fail(f"{path}:{node.lineno} imports from {node.module}: import the step from `steps`")


@pytest.mark.parametrize("module", STEP_MODULES)
def test_no_step_imports_another_step(module):
    tree = ast.parse(Path(f"steps/{module}.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    others = sorted(m for m in imported if m.startswith("steps.") and m.split(".")[1] in STEP_MODULES)
    assert not others, f"steps/{module}.py imports the step module(s) {others}: share the piece through steps/_*.py"
