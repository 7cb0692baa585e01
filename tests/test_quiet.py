"""Third-party notices that say nothing to a user stay off the terminal; our output and real warnings do not."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import srpo  # noqa: F401 - attaches the filters
from srpo.quiet import NOTICES


def test_each_notice_is_dropped_and_other_warnings_of_its_logger_pass(caplog):
    for name, fragment in NOTICES:
        with caplog.at_level(logging.WARNING):
            logging.getLogger(name).warning("prefix %s suffix", fragment)
            logging.getLogger(name).warning("a real warning from %s", name)
        assert fragment not in caplog.text and f"a real warning from {name}" in caplog.text
        caplog.clear()


def test_ops_validate_prints_its_plan_without_the_notices(tmp_path):
    """The plan of a tiny config with a GPU named imports torchao and casts diffusers modules: every notice's source."""
    text = Path("configs/tiny_cpu.yaml").read_text().replace("    device: cpu\n", "    device: cpu\n    gpu_memory_gb: 80\n", 1)
    assert "gpu_memory_gb: 80" in text
    config = tmp_path / "tiny_gpu.yaml"
    config.write_text(text)
    # flux_hps.yaml's HPS reward: its control words are checked against open_clip's tokenizer (read without weights)
    done = subprocess.run([sys.executable, "-m", "ops.validate", str(config), "configs/flux_hps.yaml"],
                          capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.getcwd()}, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "memory plan per GPU: flux 64x64" in done.stdout and f"ok    {config}" in done.stdout
    assert "ok    configs/flux_hps.yaml" in done.stdout
    for fragment in [*(fragment for _, fragment in NOTICES), "register_constant", "torchao", "float32"]:
        assert fragment not in done.stderr, done.stderr
    for _, fragment in NOTICES:  # nor among our own lines
        assert fragment not in done.stdout, done.stdout
