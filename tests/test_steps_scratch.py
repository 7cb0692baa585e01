"""Step scratch folders: gone when the process that made them exits."""

import subprocess
import sys
from pathlib import Path


def test_a_scratch_folder_is_removed_when_the_process_exits():
    code = ("from steps._scratch import scratch_dir\n"
            "d = scratch_dir('srpo-test-')\n"
            "(d / 'model').mkdir(); (d / 'model' / 'w.bin').write_bytes(b'x' * 1024)\n"
            "print(d)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    folder = Path(result.stdout.strip())
    assert folder.name.startswith("srpo-test-") and not folder.exists()
