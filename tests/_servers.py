"""Servers and ZenML configs for the stack tests (imported by test modules; not a test itself).

Every server listens on 127.0.0.1 on a free port and is stopped by the context manager that
started it, also when the test fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ZENML = str(Path(sys.executable).parent / "zenml")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM the process group started for ``proc``, then SIGKILL if it is still there."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)


@dataclass
class S3Server:
    endpoint: str
    key: str     # an IAM access key that moto created (moto checks signatures once auth is on)
    secret: str
    region: str = "us-east-1"

    def client(self, key: str | None = None, secret: str | None = None):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=key or self.key, aws_secret_access_key=secret or self.secret)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


@contextmanager
def moto_s3_server(log_dir: Path):
    """moto's S3 server on 127.0.0.1 with request signing enforced, and one IAM user allowed s3:*.

    ``INITIAL_NO_AUTH_ACTION_COUNT=3`` leaves moto open for exactly the three IAM calls that
    create that user, its access key and its policy; every later request must be signed with a
    key moto knows, so wrong credentials fail as they would on AWS.
    """
    import boto3

    port = free_port()
    log = open(log_dir / "moto.log", "wb")
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not port_open(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"moto S3 server did not start on 127.0.0.1:{port}: {(log_dir / 'moto.log').read_text()}")
            time.sleep(0.2)
        endpoint = f"http://127.0.0.1:{port}"
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        iam.create_user(UserName="srpo-tests")
        key = iam.create_access_key(UserName="srpo-tests")["AccessKey"]
        iam.put_user_policy(UserName="srpo-tests", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        yield S3Server(endpoint=endpoint, key=key["AccessKeyId"], secret=key["SecretAccessKey"])
    finally:
        stop_process(proc)
        log.close()


def reset_zenml() -> None:
    """Forget ZenML's cached global config and client, so the next Client() reads the environment."""
    from zenml.client import Client
    from zenml.config.global_config import GlobalConfiguration

    GlobalConfiguration._reset_instance()
    Client._reset_instance()


@contextmanager
def isolated_zenml(config_dir: Path):
    """Point ZenML at ``config_dir`` (own SQLite store, no analytics) for the block; yields the env."""
    with pytest.MonkeyPatch.context() as mp:
        env = {"ZENML_CONFIG_PATH": str(config_dir), "ZENML_ANALYTICS_OPT_IN": "false",
               "ZENML_AUTO_OPEN_DASHBOARD": "false", "ZENML_DEBUG": "false"}
        for name, value in env.items():
            mp.setenv(name, value)
        reset_zenml()
        try:
            yield {**os.environ}
        finally:
            reset_zenml()


def zenml_cli(*args: str, env: dict, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess:
    """Run the ``zenml`` CLI of this venv with ``env``; on failure the message carries its output."""
    result = subprocess.run([ZENML, *args], env=env, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        pytest.fail(f"zenml {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def register_stack(name: str, env: dict, **variables: str) -> subprocess.CompletedProcess:
    """``bash stacks/register.sh NAME`` with the placeholders' variables; ZenML state comes from ``env``."""
    result = subprocess.run(["bash", "stacks/register.sh", name], env={**env, "PYTHON": sys.executable, **variables},
                            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    reset_zenml()  # the CLI changed the active stack behind this process's back
    return result


#: configs/tiny_cpu.yaml's parameters, smaller where a test of the whole chain needs no more: 32 px, 4 sampler
#: steps, 2 updates (every step, artifact and number is still made; tests/test_config.py validates the file as it is).
TINY_SMALLER = {"policy": {"height": 32, "width": 32}, "rollouts": {"num_steps": 4}, "train": {"steps": 2},
                "evaluation": {"num_steps": 4}}


def tiny_config(parameters: dict | None = None, **overrides) -> dict:
    """``configs/tiny_cpu.yaml`` with TINY_SMALLER, then ``parameters`` (by section) and top-level ``overrides``."""
    import yaml

    raw = yaml.safe_load(Path("configs/tiny_cpu.yaml").read_text())
    for section, values in TINY_SMALLER.items():
        raw["parameters"][section].update(values)
    raw["parameters"].update(parameters or {})
    raw.update(overrides)
    return raw


def run_tiny(tmp_path: Path, parameters: dict | None = None, **overrides):
    """Run ``srpo_training`` with :func:`tiny_config` on the active stack."""
    import yaml

    from pipelines.training import srpo_training

    raw = tiny_config(parameters, **overrides)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return srpo_training.with_options(config_path=str(path))()


@contextmanager
def local_zenml_server(env: dict):
    """``zenml login --local`` on 127.0.0.1 and a free port; ``zenml logout --local`` afterwards.

    Yields the server URL. If logout leaves the daemon running, it is killed by its pid file.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    pid_file = Path(env["ZENML_CONFIG_PATH"]) / "zen_server" / "daemon" / "service.pid"
    try:
        zenml_cli("login", "--local", "--port", str(port), "--ip-address", "127.0.0.1", env=env, timeout=300)
        with urllib.request.urlopen(f"{url}/health", timeout=10) as response:
            assert response.read().decode().strip().strip('"') == "ok"
        reset_zenml()
        yield url
    finally:
        reset_zenml()
        zenml_cli("logout", "--local", env=env, timeout=120, check=False)
        if pid_file.exists():
            try:  # only the daemon this context started (its pid file lies in this test's config folder)
                pid = int(pid_file.read_text().strip())
                if b"local_daemon_entrypoint" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGTERM)
            except (ValueError, OSError):
                pass
        deadline = time.monotonic() + 20
        while port_open(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not port_open(port), f"the local ZenML server still listens on {url} after logout"
