"""Pack the demo dataset into the package: the snapshot stores `malaflow generate
examples/generate-demo.yaml` wrote (without descriptors) become malaflow/demo_data/Be2-298K/,
recorded in malaflow/demo_data/catalog.yaml (reader zarr; `malaflow demo DIR` ingests them
into DIR/stores). Run from the repository after the generation:

    malaflow generate examples/generate-demo.yaml && python scripts/pack-demo-data.py
"""

from __future__ import annotations

import shutil
from pathlib import Path


from malaflow import Catalog
from malaflow.generate import GenerationConfig
from malaflow.store import DESCRIPTOR_GROUP

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "examples" / "generate-demo.yaml"
PACKAGE = REPO / "malaflow" / "demo_data"
FOLDER = PACKAGE / "Be2-298K"


def main() -> None:
    config = GenerationConfig.load(CONFIG)
    generated = Catalog.load(config.catalog)
    records = generated.query(dataset=config.dataset)
    if len(records) != sum(config.split.values()):
        raise SystemExit(f"{config.catalog}: {len(records)} snapshots of {config.dataset}; generate them first")
    FOLDER.mkdir(exist_ok=True)
    for old in FOLDER.glob("*.zarr"):  # the folder's README.md stays
        shutil.rmtree(old)
    (PACKAGE / "catalog.yaml").unlink(missing_ok=True)
    shipped = Catalog(PACKAGE / "catalog.yaml")
    shipped.datasets[config.dataset] = {
        "description": "2-atom hcp Be cells at 298 K from QE 6.7 (PBE, 33/132 Ry, 8×8×8 k-points), LDOS on "
                       "0.05 eV steps broadened by 0.03 eV; made by examples/generate-demo.yaml",
        "license": "BSD-3-Clause, as malaflow (generated here with the pseudopotential of Be2/, MALA's test data)",
    }
    for i, record in enumerate(records):
        id = f"be2-298K-{i}"
        target = FOLDER / f"{id}.zarr"
        shutil.copytree(generated.resolve(record.store), target, ignore=shutil.ignore_patterns(DESCRIPTOR_GROUP))
        shipped.add(target, reader="zarr", id=id, dataset=config.dataset, split=record.split,
                    store=PACKAGE / "stores" / f"{id}.zarr", write_store=False)
        print(f"{record.id} ({record.split}) → {target.relative_to(REPO)}")
    size = sum(p.stat().st_size for p in FOLDER.rglob("*") if p.is_file())
    print(f"{len(records)} snapshots, {size / 1e6:.1f} MB in {FOLDER.relative_to(REPO)}")


if __name__ == "__main__":
    main()
