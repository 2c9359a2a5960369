"""What `pip install` puts in place: every Python package folder of the source is listed
in pyproject.toml (a folder left out installs nowhere but works in a source checkout)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_installed():
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setup["packages"])
    found = set()
    for name, folder in setup["package-dir"].items():
        for init in (ROOT / folder).rglob("*.py"):
            if "__pycache__" in init.parts:
                continue
            parts = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *parts)))
    assert found <= listed, f"not listed in pyproject.toml: {sorted(found - listed)}"
    missing_init = [p for p in found if not (ROOT / setup["package-dir"][p.split(".")[0]]
                                             / Path(*p.split(".")[1:]) / "__init__.py").is_file()]
    assert missing_init == [], f"package folders without __init__.py: {missing_init}"
