"""Register the stack defined in ``stacks/<name>.yaml`` and make it active (``bash stacks/register.sh <name>``).

Placeholders ``${NAME}`` / ``${NAME:-default}`` in the file are filled from the environment first
(a set variable wins, even when empty; a ``${NAME}`` without a default must be set). Secrets (S3
keys, registry credentials) are never stored here: create them first with ``zenml secret create``
as the stack's file says. A stack file's ``# flavor: <type> <module.Class>`` lines name custom
flavors (``flavors/``), registered first; one already registered is kept.

The work is ZenML's own CLI (``zenml <type> flavor register``, ``zenml stack import``, ``zenml
stack set``), run in this one process: each ``zenml`` command started on its own pays ZenML's
import and store start-up again (about 5 s each on 2 cores).

Exit codes: 2 a missing file or variable, 3 the stack is already registered, 4 a flavor failed
to register, 1 any other ZenML error.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import sys
import tempfile
from contextlib import nullcontext, redirect_stdout
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PLACEHOLDER = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")
FLAVOR_LINE = re.compile(r"^# flavor: *(\S+) +(\S+)", re.MULTILINE)


class RegisterError(Exception):
    """A problem to report in one line, with the exit code the script ends with."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def stack_file(name: str) -> Path:
    path = HERE / f"{name}.yaml"
    if not path.is_file():
        have = " ".join(sorted(p.name for p in HERE.glob("*.yaml")))
        raise RegisterError(f"no stack file {path} (have: {have})", 2)
    return path


def fill_placeholders(text: str, name: str, env: dict[str, str]) -> str:
    """``${NAME}`` and ``${NAME:-default}`` from ``env``: a set variable wins, even when empty."""

    def value(match: re.Match) -> str:
        variable, default = match.group(1), match.group(2)
        if variable in env:
            return env[variable]
        if default is not None:
            return default
        raise RegisterError(f"stacks/{name}.yaml needs ${variable}: set it in the environment "
                            "(see the comments at the top of the file)", 2)

    return PLACEHOLDER.sub(value, text)


def stack_name(text: str, path: Path) -> str:
    match = re.search(r"^stack_name: *(\S+)", text, re.MULTILINE)
    if not match:
        raise RegisterError(f"{path} has no `stack_name:` line", 2)
    return match.group(1)


def zenml_cli(*args: str, quiet: bool = False) -> tuple[int, str]:
    """``zenml ARGS`` in this process: its exit code and, with ``quiet``, its output (else printed)."""
    import click
    from zenml.cli.cli import cli

    out = io.StringIO()
    try:
        with redirect_stdout(out) if quiet else nullcontext():
            result = cli.main(list(args), prog_name="zenml", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except click.exceptions.Exit as err:
        code = err.exit_code
    except click.ClickException as err:
        err.show(file=out if quiet else sys.stderr)
        code = err.exit_code or 1
    except SystemExit as err:
        code = err.code if isinstance(err.code, int) else 1
    return code, out.getvalue()


def is_registered(stack: str) -> bool:
    from zenml.client import Client

    try:
        Client().get_stack(stack, allow_name_prefix_match=False)
    except KeyError:
        return False
    return True


def register(name: str, env: dict[str, str]) -> str:
    """Register ``stacks/<name>.yaml`` (flavors first) and make it active; the stack's name."""
    path = stack_file(name)
    raw = path.read_text()
    filled = fill_placeholders(raw, name, env)
    stack = stack_name(filled, path)
    if importlib.util.find_spec("zenml") is None:
        raise RegisterError(f"zenml is not installed for {sys.executable}: activate the project's environment "
                            "or set PYTHON to its interpreter (PYTHON=.venv/bin/python bash stacks/register.sh ...)",
                            1)
    sys.path.insert(0, str(ROOT))  # custom flavors are sources below the repository root
    os.environ.setdefault("ZENML_CUSTOM_SOURCE_ROOT", str(ROOT))
    if is_registered(stack):
        raise RegisterError(f"stack {stack} is already registered: 'zenml stack set {stack}' to use it, "
                            f"or 'zenml stack delete {stack}' and run this again", 3)
    for component_type, source in FLAVOR_LINE.findall(raw):
        code, output = zenml_cli(component_type, "flavor", "register", source, quiet=True)
        if code != 0:
            raise RegisterError(f"registering the {component_type} flavor {source} failed:\n{output}", 4)
    with tempfile.TemporaryDirectory() as folder:
        filled_path = Path(folder) / f"{name}.yaml"
        filled_path.write_text(filled)
        for args in (("stack", "import", stack, "-f", str(filled_path)), ("stack", "set", stack)):
            code, _ = zenml_cli(*args)
            if code != 0:
                raise RegisterError(f"zenml {' '.join(args[:2])} {stack} failed (exit {code})", 1)
    return stack


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: stacks/register.sh <stack file name without .yaml>", file=sys.stderr)
        return 2
    try:
        register(argv[0], dict(os.environ))
    except RegisterError as err:
        print(err, file=sys.stderr)
        return err.code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
