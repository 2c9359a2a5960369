"""Soak test (a benchmark, not a test): 4 processes ingest snapshots into one catalog
and compute descriptors into their stores for several minutes while the driver kills
one of them with SIGKILL every few seconds and starts it again. Afterwards: the catalog
is valid, every add a worker confirmed is recorded, every recorded store and its
descriptors equal a clean single-process write of the same files, and no temporary or
lock is left that a later write would trip over.

``python -m benchmarks soak`` (MALAFLOW_SOAK_SECONDS sets the duration, default 300).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKER = r"""
import sys
from pathlib import Path
import malaflow
from malaflow.catalog import Catalog
catalog, demo, name = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
done = Path(catalog).parent / f"{name}.done"
k = 0
while True:
    i = k % 4
    record = Catalog.load(catalog).add(demo / f"Be_snapshot{i}.info.json", id=f"{name}-{k}", chunks=9)
    malaflow.compute_descriptors(Catalog.load(catalog).store_path(record.id), "gaussian", chunks=9, progress=False)
    with open(done, "a") as fh:  # confirmed: recorded and its descriptors written
        fh.write(f"{record.id} {i}\n")
        fh.flush()
        import os; os.fsync(fh.fileno())
    k += 1
"""


def run(seconds: float, workers: int = 4, seed: int = 0) -> dict:
    import numpy as np

    import malaflow
    from malaflow.catalog import Catalog

    rng = random.Random(seed)
    demo = Path(malaflow.__file__).parent / "demo_data" / "Be2"
    work = Path(tempfile.mkdtemp(prefix="malaflow-soak-"))
    catalog = work / "catalog.yaml"
    Catalog(catalog).save()
    script = work / "worker.py"
    script.write_text(WORKER)
    generation = [0] * workers

    def start(w: int) -> subprocess.Popen:
        generation[w] += 1
        return subprocess.Popen([sys.executable, str(script), str(catalog), str(demo), f"w{w}g{generation[w]}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    procs = [start(w) for w in range(workers)]
    kills, crashes, t0 = 0, [], time.monotonic()
    while time.monotonic() - t0 < seconds:
        time.sleep(rng.uniform(2.0, 8.0))
        w = rng.randrange(workers)
        if procs[w].poll() is not None:  # died by itself: that is a failure of the code
            crashes.append(procs[w].stderr.read()[-2000:])
        else:
            procs[w].send_signal(signal.SIGKILL)
            procs[w].wait()
            kills += 1
        procs[w] = start(w)
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.wait()

    cat = Catalog.load(catalog)  # validates the YAML and every record
    recorded = {r.id: r for r in cat.records}
    confirmed = dict(line.split() for f in work.glob("*.done") for line in f.read_text().splitlines())
    lost = sorted(set(confirmed) - set(recorded))
    clean = {}
    for i in range(4):
        snap = malaflow.read_snapshot(demo / f"Be_snapshot{i}.info.json")
        store = malaflow.write_snapshot(snap, work / "clean" / f"{i}.zarr", chunks=9)
        clean[i] = (malaflow.open_snapshot(store).ldos.values,
                    malaflow.compute_descriptors(store, "gaussian", chunks=9, progress=False).values)
    different = []
    for id, i in confirmed.items():
        if id in recorded:
            store = cat.store_path(id)
            ldos = malaflow.open_snapshot(store).ldos.values
            desc = malaflow.open_descriptors(store, "gaussian").values
            if not (np.array_equal(ldos, clean[int(i)][0]) and np.array_equal(desc, clean[int(i)][1])):
                different.append(id)
    for r in cat.records:
        cat.verify(r.id)
    stores = {p.name[:-5] for p in (work / "stores").glob("*.zarr")}
    from malaflow.atomic import remove_stale_temporaries

    remove_stale_temporaries(work / "stores")  # what the next write there does
    leftovers = [p.name for p in (work / "stores").glob(".malaflow-tmp-*")]
    return {"seconds": round(time.monotonic() - t0), "kills": kills, "crashes": len(crashes),
            "crash_tails": crashes[:2], "recorded": len(recorded), "confirmed": len(confirmed), "lost": lost,
            "different": different, "unconfirmed_stores": len(stores - set(confirmed)),
            "unrecorded_stores": len(stores - set(recorded)), "temporaries_left": len(leftovers), "work": str(work)}


def main() -> str:
    from .harness import table

    seconds = float(os.environ.get("MALAFLOW_SOAK_SECONDS", 300))
    r = run(seconds)
    rows = [[f"{r['seconds']} s, 4 processes", r["kills"], r["crashes"], r["confirmed"], r["recorded"], len(r["lost"]),
             len(r["different"]), r["unrecorded_stores"], r["temporaries_left"]]]
    text = table(rows, ["run", "kill -9", "crashes", "confirmed adds", "records", "lost", "different from clean",
                        "stores without record", "temporaries left"])
    if r["crashes"]:
        text += "\n\ncrash output:\n" + "\n---\n".join(r["crash_tails"])
    return text + f"\n\n(work folder {r['work']})"


if __name__ == "__main__":
    print(main())
