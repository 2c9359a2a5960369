"""catalog.yaml: records, queries, validation, ingest; and the CLI around it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import malaflow
from malaflow.catalog import Catalog
from malaflow.cli import app
from malaflow.errors import CatalogError, InputFileError
from malaflow.readers import sha256

from conftest import DEMO_DATA, REPO

runner = CliRunner()


@pytest.fixture()
def demo_catalog(tmp_path) -> Catalog:
    """A catalog of the shipped demo snapshots in a temp folder (train 0,1; validation 2; test 3)."""
    data = tmp_path / "raw"
    shutil.copytree(DEMO_DATA, data)
    cat = Catalog(tmp_path / "catalog.yaml")
    for i, split in enumerate(["train", "train", "validation", "test"]):
        cat.add(data / f"Be_snapshot{i}.info.json", id=f"be-{i}", dataset="be2", split=split, chunks=8)
    return cat


def test_add_records_what_the_files_say(demo_catalog, tmp_path):
    cat = Catalog.load(tmp_path / "catalog.yaml")
    r = cat.get("be-0")
    assert (r.code, r.reader, r.elements, r.n_atoms, r.grid_shape, r.split) == ("mala", "mala", ["Be"], 2, [18, 18, 27], "train")
    assert r.source == "raw/Be_snapshot0.info.json" and r.store == "stores/be-0.zarr"
    assert r.raw["raw/Be_snapshot0.out.npy"] == sha256(tmp_path / "raw" / "Be_snapshot0.out.npy")
    assert "raw/recreate_data/Be.pp.ldos.in" in r.raw  # defines the LDOS energy grid
    assert r.energies["fermi_energy"] == 8.743
    ds = cat.open("be-0")
    assert isinstance(ds.ldos.data, da.Array) and ds.ldos.data.chunksize == (8, 8, 8, 11)
    np.testing.assert_array_equal(ds.ldos.values, np.load(tmp_path / "raw" / "Be_snapshot0.out.npy"))


def test_query(demo_catalog):
    ids = lambda records: [r.id for r in records]  # noqa: E731
    assert ids(demo_catalog.query(split="train")) == ["be-0", "be-1"]
    assert ids(demo_catalog.query(elements=["Be"], temperature=(290, 310), split="test")) == ["be-3"]
    assert demo_catalog.query(elements="Al") == []
    assert demo_catalog.query(temperature=(0, 100)) == []
    assert ids(demo_catalog.query(code="mala", dataset="be2")) == ["be-0", "be-1", "be-2", "be-3"]
    with pytest.raises(CatalogError, match="split must be one of"):
        demo_catalog.query(split="training")


def test_ingest_rewrites_a_lost_store_identically(demo_catalog):
    store = demo_catalog.store_path("be-2")
    before = demo_catalog.open("be-2").ldos.values
    shutil.rmtree(store)
    with pytest.raises(CatalogError, match=r"run `malaflow catalog ingest be-2`"):
        demo_catalog.open("be-2")
    assert demo_catalog.ingest() == [store]
    np.testing.assert_array_equal(demo_catalog.open("be-2").ldos.values, before)


def test_changed_raw_file_is_detected(demo_catalog, tmp_path):
    (tmp_path / "raw" / "Be_snapshot1.info.json").write_text("{}")
    with pytest.raises(CatalogError, match=r"Be_snapshot1\.info\.json changed since it was catalogued"):
        demo_catalog.ingest(["be-1"], force=True)


def test_bad_input_writes_nothing(demo_catalog, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "raw", bad)
    ldos = np.load(bad / "Be_snapshot3.out.npy")
    ldos[0, 0, 0, 0] = np.nan
    np.save(bad / "Be_snapshot3.out.npy", ldos)
    before = (tmp_path / "catalog.yaml").read_text()
    with pytest.raises(InputFileError, match="NaN"):
        demo_catalog.add(bad / "Be_snapshot3.out.npy", id="bad")
    assert (tmp_path / "catalog.yaml").read_text() == before
    assert sorted(p.name for p in (tmp_path / "stores").iterdir()) == ["be-0.zarr", "be-1.zarr", "be-2.zarr", "be-3.zarr"]
    with pytest.raises(CatalogError, match="'be-1' is recorded already"):
        demo_catalog.add(tmp_path / "raw" / "Be_snapshot1.out.npy", id="be-1")


def test_cli_says_what_it_did_and_how_to_replace(demo_catalog, tmp_path):
    result = runner.invoke(app, ["catalog", "ingest", "--catalog", str(demo_catalog.path)])
    assert result.exit_code == 0 and "nothing to do: every store of" in result.output
    result = runner.invoke(app, ["catalog", "add", str(tmp_path / "raw" / "Be_snapshot1.info.json"), "--id", "be-1",
                                 "--catalog", str(demo_catalog.path)])
    assert result.exit_code != 0 and "--overwrite at the command line" in str(result.exception)


def test_training_and_testing_write_the_stores_they_need(demo_catalog, tmp_path):
    """A catalog whose stores are not written yet (a fresh clone): train and test ingest them."""
    for i in range(4):
        shutil.rmtree(demo_catalog.store_path(f"be-{i}"))
    model = malaflow.train({"catalog": str(demo_catalog.path), "output": str(tmp_path / "m"), "epochs": 1,
                            "descriptor": {"plugin": "gaussian", "params": {}}, "early_stopping": 0,
                            "model": {"plugin": "feedforward", "params": {"layers": [8]}}}, progress=False)
    assert all(demo_catalog.store_path(f"be-{i}").is_dir() for i in range(3))
    assert not demo_catalog.store_path("be-3").exists()
    result = runner.invoke(app, ["test", str(model), "--catalog", str(demo_catalog.path)])
    assert result.exit_code == 0, result.output
    assert demo_catalog.store_path("be-3").is_dir() and "be-3" in result.output


def test_a_top_level_typo_is_named(demo_catalog):
    text = demo_catalog.path.read_text().replace("store_dir:", "store_dirr:")
    demo_catalog.path.write_text(text)
    with pytest.raises(CatalogError, match=r"unknown top-level key\(s\) 'store_dirr'; a catalog holds"):
        Catalog.load(demo_catalog.path)


def test_a_catalog_id_wins_over_a_folder_of_the_same_name(demo_catalog, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "be-1").mkdir()  # e.g. a folder of raw files named like the snapshot
    result = runner.invoke(app, ["info", "be-1", "--catalog", str(demo_catalog.path)])
    assert result.exit_code == 0, result.exception
    assert "2 atoms (Be)" in result.output


def test_help_shows_flags_and_defaults_plainly():
    text = runner.invoke(app, ["train", "--help"]).output
    assert "--resume / --no-resume" in text and "<bool>" not in text and "[default: resume]" in text
    info = " ".join(runner.invoke(app, ["info", "--help"]).output.split())  # as read, not as wrapped
    assert "(default: $MALAFLOW_CATALOG, else ./catalog.yaml, else the repository's in a source checkout)" in info


def test_a_full_disk_during_add_is_one_message_and_changes_nothing(demo_catalog, tmp_path, monkeypatch):
    import errno

    import xarray as xr

    def full_disk(self, store, *args, **kwargs):
        Path(store).mkdir(parents=True, exist_ok=True)
        (Path(store) / "part").write_bytes(b"x")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(xr.Dataset, "to_zarr", full_disk)
    before = demo_catalog.path.read_text()
    stores = sorted(p.name for p in (tmp_path / "stores").iterdir())
    result = runner.invoke(app, ["catalog", "add", str(tmp_path / "raw" / "Be_snapshot1.info.json"), "--id", "new",
                                 "--catalog", str(demo_catalog.path)])
    assert result.exit_code != 0 and "no space left on the device writing" in str(result.exception)
    assert demo_catalog.path.read_text() == before
    assert sorted(p.name for p in (tmp_path / "stores").iterdir()) == stores  # no store, no temporary


RECORD = {"id": "a", "code": "qe", "reader": "qe", "source": "a.out", "store": "stores/a.zarr"}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"temperature": "hot"}, r":LINE: snapshot 'a': field 'temperature' must be a temperature in K \(≥ 0\), got 'hot'"),
        ({"grid_shape": [18, 18]}, r"field 'grid_shape' must be three positive integers"),
        ({"split": "training"}, r"field 'split' must be one of train, validation, test"),
        ({"colour": "red"}, r"unknown field\(s\) colour"),
        ({"store": None, "reader": None}, None),
    ],
)
def test_validation_names_entry_and_field(tmp_path, change, message):
    records = [dict(RECORD, id="first"), {k: v for k, v in {**RECORD, **change}.items() if v is not None}]
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "snapshots": records}, sort_keys=False))
    line = path.read_text().splitlines().index("- id: a") + 1  # where the bad record starts
    message = (message or r":LINE: snapshot 'a': missing field\(s\) reader, store").replace("LINE", str(line))
    with pytest.raises(CatalogError, match=message):
        Catalog.load(path)


def test_duplicate_ids_and_bad_yaml(tmp_path):
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"snapshots": [RECORD, RECORD]}))
    with pytest.raises(CatalogError, match="snapshot id 'a' appears twice"):
        Catalog.load(path)
    path.write_text("snapshots:\n  - id: [unclosed\n")
    with pytest.raises(CatalogError, match=r"catalog.yaml:\d+: not valid YAML"):
        Catalog.load(path)


def test_shipped_catalog_describes_the_demo_data():
    cat = Catalog.load(REPO / "catalog.yaml")
    assert [r.split for r in cat.records] == ["train", "train", "validation", "test"]
    for r in cat.records:
        cat.verify(r.id)  # every raw file is in the repo and unchanged
        assert cat.resolve(r.source).is_relative_to(DEMO_DATA)


def test_cli_catalog_commands(demo_catalog, tmp_path):
    c = ["--catalog", str(tmp_path / "catalog.yaml")]
    out = runner.invoke(app, ["catalog", "list", *c])
    assert out.exit_code == 0 and "(4 snapshots)" in out.output
    out = runner.invoke(app, ["catalog", "query", "--elements", "Be", "--temperature", "250:350", "--split", "validation", *c])
    assert out.exit_code == 0 and "be-2" in out.output and "(1 snapshot)" in out.output
    out = runner.invoke(app, ["catalog", "show", "be-3", *c])
    assert yaml.safe_load(out.output)["split"] == "test"
    out = runner.invoke(app, ["info", "be-1", *c])
    assert "2 atoms (Be)" in out.output and "LDOS on 11 energies" in out.output
    out = runner.invoke(app, ["catalog", "add", str(REPO.parent / "nope.out"), *c])
    assert isinstance(out.exception, InputFileError)


def test_cli_add_with_reader_options(tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(DEMO_DATA, raw)
    shutil.rmtree(raw / "recreate_data")
    cat = str(tmp_path / "new.yaml")
    out = runner.invoke(app, ["catalog", "add", str(raw / "Be_snapshot2.out.npy"), "--catalog", cat,
                              "--reader", "mala", "-o", "energy_grid=[-5, 2.5]", "--split", "test"])
    assert out.exit_code == 0, out.output
    record = Catalog.load(cat).get("Be_snapshot2")
    assert record.options == {"energy_grid": [-5, 2.5]} and record.split == "test"
    np.testing.assert_allclose(Catalog.load(cat).open("Be_snapshot2").energy.values, -5 + 2.5 * np.arange(11))


# ------------------------------------------------------------------ many writers

ADDER = """
import sys
from malaflow.catalog import Catalog
path, source, prefix = sys.argv[1:4]
for k in range(10):
    cat = Catalog.load(path)  # each add from a fresh read, as separate commands would
    cat.add(source, id=f"{prefix}-{k}", split="train")
"""


def test_concurrent_writers_lose_nothing(demo_catalog, tmp_path):
    """20 `malaflow catalog add` processes at once, then two processes adding 10 each:
    every entry lands (4 + 20 + 20), and every store on disk is recorded."""
    source = tmp_path / "raw" / "Be_snapshot0.info.json"
    path = str(demo_catalog.path)
    procs = [subprocess.Popen([sys.executable, "-m", "malaflow.cli", "catalog", "add", str(source), "--id", f"cli-{k}",
                               "-c", path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for k in range(20)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[-500:] for o in outputs if "added" not in o]
    script = tmp_path / "adder.py"
    script.write_text(ADDER)
    procs = [subprocess.Popen([sys.executable, str(script), path, str(source), prefix], stderr=subprocess.PIPE, text=True)
             for prefix in ("api-a", "api-b")]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    cat = Catalog.load(path)
    ids = {r.id for r in cat.records}
    assert len(cat.records) == 44 and ids >= {f"cli-{k}" for k in range(20)} | {f"api-b-{k}" for k in range(10)}
    stores = {p.name for p in (tmp_path / "stores").iterdir() if not p.name.startswith(".")}
    assert stores == {f"{i}.zarr" for i in ids}
    assert cat.datasets == demo_catalog.datasets and not cat.failed


def test_snapshot_ids_cannot_leave_the_store_folder(demo_catalog, tmp_path):
    for bad in ("../x", "../../esc", "a/b", ".hidden"):
        with pytest.raises(CatalogError, match="use letters, digits"):
            demo_catalog.add(tmp_path / "raw" / "Be_snapshot1.info.json", id=bad)
    result = runner.invoke(app, ["catalog", "add", str(tmp_path / "raw" / "Be_snapshot1.info.json"), "--id",
                                 "../../esc", "-c", str(demo_catalog.path)])
    assert result.exit_code != 0 and "no path separators" in str(result.exception)
    assert not (tmp_path.parent / "esc.zarr").exists()


def test_writing_commands_need_a_catalog_of_their_own(tmp_path, monkeypatch):
    """Without -c, MALAFLOW_CATALOG or ./catalog.yaml, nothing is written beside the package."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MALAFLOW_CATALOG", raising=False)
    source = DEMO_DATA / "Be_snapshot0.info.json"
    for args in (["catalog", "add", str(source)], ["catalog", "ingest"], ["descriptors", "compute", "-p", "gaussian"]):
        result = runner.invoke(app, args)
        assert result.exit_code != 0 and "malaflow catalog init" in str(result.exception), (args, result.output)
    assert runner.invoke(app, ["catalog", "init"]).exit_code == 0
    result = runner.invoke(app, ["catalog", "add", str(source), "--id", "be0"])
    assert result.exit_code == 0, result.output
    assert Catalog.load(tmp_path / "catalog.yaml").get("be0") and (tmp_path / "stores" / "be0.zarr").is_dir()
    assert not (REPO / "stores" / "be0.zarr").exists()


def test_a_store_left_by_an_interrupted_add_is_listed_and_replaced(demo_catalog, tmp_path):
    """An add killed after writing its store and before saving its record leaves a store no
    record names: validate says so, and adding that id again replaces it."""
    source = tmp_path / "raw" / "Be_snapshot1.info.json"
    malaflow.write_snapshot(malaflow.read_snapshot(tmp_path / "raw" / "Be_snapshot2.info.json"),
                            tmp_path / "stores" / "late.zarr")
    assert demo_catalog.unrecorded_stores() == [tmp_path / "stores" / "late.zarr"]
    result = runner.invoke(app, ["catalog", "validate", "-c", str(demo_catalog.path)])
    assert "late.zarr is in the store folder but no record names it" in result.output
    demo_catalog.add(source, id="late")
    assert demo_catalog.unrecorded_stores() == []
    stored = malaflow.open_snapshot(tmp_path / "stores" / "late.zarr")
    np.testing.assert_array_equal(stored.positions.values, malaflow.read_snapshot(source).positions)
    with pytest.raises(CatalogError, match="recorded already"):
        demo_catalog.add(source, id="late")


def test_a_store_from_elsewhere_is_raw_data(tmp_path):
    """A snapshot store (the zarr reader): recorded without writing a store (--no-store),
    ingested into one identical in its arrays and attributes, its files checksummed."""
    source = tmp_path / "elsewhere" / "be.zarr"
    shutil.copytree(REPO / "malaflow" / "demo_data" / "Be2-298K" / "be2-298K-3.zarr", source)
    path = tmp_path / "catalog.yaml"
    result = runner.invoke(app, ["catalog", "add", str(source), "--no-store", "-c", str(path)])
    assert result.exit_code == 0, result.output
    cat = Catalog.load(path)
    (record,) = cat.records
    assert record.reader == "zarr" and record.id == "be" and not cat.store_path("be").exists()
    assert len(record.raw) > 10 and all(k.startswith("elsewhere/be.zarr/") for k in record.raw)
    assert cat.ingest() == [cat.store_path("be")]
    copy, original = cat.open("be"), malaflow.open_snapshot(source)
    np.testing.assert_array_equal(copy.ldos.values, original.ldos.values)
    assert copy.attrs["reference"] == original.attrs["reference"]
    assert copy.attrs["provenance"]["source_provenance"] == original.attrs["provenance"]
    (source / "zarr.json").write_text((source / "zarr.json").read_text().replace("298.0", "299.0", 1))
    with pytest.raises(CatalogError, match=r"be\.zarr/zarr\.json changed since it was catalogued"):
        cat.ingest(force=True)
