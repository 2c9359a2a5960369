"""`malaflow demo` as a user runs it: malaflow installed from a wheel (not the source tree),
the command run in an empty folder; its numbers checked against pw.x's."""

from __future__ import annotations

import re
import subprocess
import sys
import venv

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, str]:
    """A venv holding malaflow installed from a wheel built from this checkout. The venv sees
    the installed dependencies (no download); its own malaflow comes first on its path."""
    root = tmp_path_factory.mktemp("install")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(root / "wheel"), str(REPO)], check=True, capture_output=True)
    venv.create(root / "venv", system_site_packages=True, with_pip=True)
    bin = root / "venv" / "bin"
    wheel = next((root / "wheel").glob("malaflow-*.whl"))
    subprocess.run([str(bin / "python"), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True,
                   capture_output=True)
    where = subprocess.run([str(bin / "python"), "-c", "import malaflow; print(malaflow.__file__)"],
                           check=True, capture_output=True, text=True, cwd=root).stdout
    assert where.startswith(str(root / "venv")), where  # the wheel's copy, not the checkout
    return {"malaflow": str(bin / "malaflow"), "package": where.strip().rsplit("/", 1)[0]}


def test_demo_from_a_wheel_in_an_empty_folder(installed, tmp_path):
    result = subprocess.run([installed["malaflow"], "demo"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    folder = tmp_path / "malaflow-demo"
    assert "4 Zarr store(s) written" in out and "4 computed" in out
    rows = re.findall(r"^(be2-298K-\d) +(\w+) +([\d.]+) +([\d.]+) +([-+][\d.]+) +([-+][\d.]+) +([-+][\d.]+)$", out, re.M)
    assert [r[1] for r in rows] == ["train", "train", "validation", "test"], out
    for id, split, ef_pw, ef_ldos, d_ef, d_band, d_f in rows:
        # the shipped LDOS grid against pw.x: Fermi level −18.2…+1.4 meV, band energy and total
        # free energy within 0.47 meV/atom measured
        assert abs(float(d_ef)) <= 20.0 and abs(float(d_band)) <= 1.0 and abs(float(d_f)) <= 1.0, (id, out)
    predicted = re.search(r"band energy \(eV\) +([-\d.]+) +([-\d.]+) +([-\d.]+) +([-+][\d.]+) meV/atom", out)
    assert predicted, out
    # the network's test-snapshot band energy: +14.6 meV/atom measured (two 2-atom training cells)
    assert abs(float(predicted.group(4))) < 50.0
    assert (folder / "demo-output" / "dos-predicted-be2-298K-3.png").is_file()
    assert sorted((folder / "stores").glob("*.zarr")) == [folder / "stores" / f"be2-298K-{i}.zarr" for i in range(4)]
    package_data = subprocess.run(["find", installed["package"] + "/demo_data", "-newer", str(tmp_path)],
                                  capture_output=True, text=True).stdout
    assert package_data == "", f"the demo wrote into the installed package: {package_data}"


def test_demo_into_a_file_is_one_line(tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    run = subprocess.run([sys.executable, "-m", "malaflow.cli", "demo", "taken"], capture_output=True, text=True,
                         cwd=tmp_path)
    assert run.returncode == 1 and run.stderr.startswith("error: taken: not a folder"), run.stderr
    assert "Traceback" not in run.stderr and (tmp_path / "taken").read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
