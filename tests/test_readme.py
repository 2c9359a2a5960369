"""The README's tour runs top to bottom as written, on a copy of the repository."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_the_tour_runs_in_order(tmp_path):
    """The python blocks in order, then the shell block ("From a shell"), in one clone."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    shutil.copyfile(REPO / "README.md", clone / "README.md")  # the README as it is now
    blocks = re.findall(r"```python\n(.*?)```", (clone / "README.md").read_text(), re.S)
    plugin_examples = [b for b in blocks if b.lstrip().startswith("# my_")]  # files a plugin author writes
    script = "\n".join(b for b in blocks if b not in plugin_examples)
    run = subprocess.run([sys.executable, "-c", script], cwd=clone, capture_output=True, text=True, timeout=3000)
    assert run.returncode == 0, run.stderr[-3000:]
    (shell,) = re.findall(r"### From a shell\n+```bash\n(.*?)```", (clone / "README.md").read_text(), re.S)
    run = subprocess.run(["bash", "-e", "-x", "-c", shell], cwd=clone, capture_output=True, text=True, timeout=3000)
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-3000:])
    assert (clone / "pred.zarr").is_dir() and (clone / "mine" / "catalog.yaml").is_file()
