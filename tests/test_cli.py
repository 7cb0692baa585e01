"""Every ``python -m ...`` tool answers ``--help`` with its arguments, and an unknown name with one clear line."""

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

MAIN_GUARD = re.compile(r'^if __name__ == "__main__":', re.MULTILINE)


def command_line_modules() -> list[str]:
    """Every module of the repository's packages that runs as ``python -m <module>``."""
    found = []
    for package in ("ops", "benchmarks", "srpo", "steps", "pipelines", "materializers"):
        for path in sorted(Path(package).rglob("*.py")):
            if MAIN_GUARD.search(path.read_text()):
                found.append(".".join(path.with_suffix("").parts))
    return found


MODULES = command_line_modules()


def test_the_tools_are_found():
    assert {"ops.validate", "ops.summary", "ops.lineage", "ops.preflight", "ops.train", "ops.multinode",
            "benchmarks.world"} <= set(MODULES)


@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")  # a benchmark another one imported
@pytest.mark.parametrize("module", MODULES)
def test_help_lists_the_arguments_and_exits_0(module, monkeypatch, capsys):
    """The module's ``__main__`` block runs as ``python -m`` would run it (in this process, so the
    imports are paid once), with ``--help``: argparse prints the usage and its options, and exits 0."""
    monkeypatch.setattr(sys, "argv", [module, "--help"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    out = capsys.readouterr().out
    assert exit_.value.code == 0, out
    assert out.startswith("usage: "), out
    assert "-h, --help" in out, out


def test_help_from_a_fresh_interpreter_is_not_a_pipeline_name(tmp_path):
    """The report that started this: ``python -m ops.summary --help`` took --help as a pipeline name."""
    done = subprocess.run([sys.executable, "-m", "ops.summary", "--help"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "ZENML_CONFIG_PATH": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert "pipeline" in done.stdout and "Traceback" not in done.stderr


def test_an_unknown_pipeline_or_model_name_is_one_line_and_exit_2(zenml_client, capsys):
    import ops.lineage
    import ops.summary

    for main, name, kind in [(ops.summary.main, "srpo_trainnig", "pipeline"),
                             (ops.lineage.main, "srpo-tiny-cpuu", "model")]:
        with pytest.raises(SystemExit) as exit_:
            main([name])
        err = capsys.readouterr().err
        assert exit_.value.code == 2
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert f"no {kind} named {name!r}" in err and "lists them" in err, err
