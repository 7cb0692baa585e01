"""Stack files register with ZenML's own CLI."""

import os
import subprocess
import sys
from pathlib import Path


def test_local_stack_registers_and_becomes_active(tmp_path):
    env = {**os.environ, "ZENML_CONFIG_PATH": str(tmp_path / "zenml"), "ZENML_ANALYTICS_OPT_IN": "false",
           "PYTHON": sys.executable, "ZENML": str(Path(sys.executable).parent / "zenml")}
    subprocess.run(["bash", "stacks/register.sh", "local"], check=True, env=env, capture_output=True)
    out = subprocess.run([env["ZENML"], "stack", "describe"], check=True, env=env, capture_output=True, text=True)
    assert "srpo-local" in out.stdout + out.stderr
    bad = subprocess.run(["bash", "stacks/register.sh", "nope"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "local.yaml" in bad.stderr
