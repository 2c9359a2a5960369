"""`malaflow learn CONFIG`: active learning — DFT where the ensemble is unsure.

Each round trains an ensemble (the training config, ``ensemble: K ≥ 2``) on the starting
cells plus those acquired so far, samples fresh candidate configurations (the samplers of
``generate``: a crystal with Einstein displacements or MD frames), predicts each and ranks
them by the calibrated σ of the band energy per atom (``selection: sigma``; ``random`` is the
control), and sends the top ``per_round`` to DFT through ``generate`` (as tasks), which adds
them to the catalog. It stops after ``rounds`` acquisitions, when the DFT budget is spent, or
when no candidate's σ exceeds ``target_sigma``; the last round trains and evaluates only.

Every round is recorded in OUTPUT/rounds.json (training cells, the DFT core-minutes spent on
the acquired ones among them and on the round's own acquisition, the candidates' σ and
extrapolated share, the held-out cells' true errors and σ, the cells acquired) as soon as it
ends. A changed ``held_out`` re-scores the recorded rounds with their kept models. Running
again goes on from the first unrecorded round (or
from the last one, if the config now asks for more rounds, budget or a lower target): its
training resumes from its checkpoints (with ``warm_start: true`` each round's members start
from the previous round's), its candidates are drawn again from the same seeds,
its choice is read back from OUTPUT/round-R/chosen.extxyz, and cells whose DFT finished
are not run again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import load_config
from .errors import ElectronCountError, MalaflowError, ParameterError

log = logging.getLogger(__name__)

SELECTIONS = ("sigma", "random")
ROUNDS_FILE = "rounds.json"
PLOT_FILE = "learning.png"
#: candidate seeds of round r in loop ``seed`` s: the spec's seed + ROUND_SEED_STRIDE × (r + 1) +
#: LOOP_SEED_STRIDE × s, never the spec's own; the members' seeds move by LOOP_SEED_STRIDE × s too
ROUND_SEED_STRIDE = 1000
LOOP_SEED_STRIDE = 100_000


@dataclass
class LearnConfig:
    output: str  # folder of the rounds: models, chosen structures, rounds.json, the plot
    generation: str  # generation config: DFT settings, the catalog and folder the new cells go to
    training: str  # training config (ensemble: K ≥ 2); its training selection is the start
    candidates: list[dict[str, Any]] = field(default_factory=list)  # structure specs, as generate's structures:
    per_round: int = 2  # cells sent to DFT per round
    rounds: int = 5  # acquisition rounds at most
    budget_core_minutes: float | None = None  # stop when the acquired cells' DFT has cost this much
    target_sigma: float = 0.0  # meV/atom: stop when no candidate's σ of the band energy exceeds it
    selection: str = "sigma"  # "sigma": the most uncertain; "random": the control
    held_out: list[dict[str, Any]] = field(default_factory=list)  # selections of cells whose true errors are recorded
    dataset: str = "learned"  # the acquired cells' dataset in the catalog
    seed: int = 0  # the loop's: moves the candidates' draws, the random choice and the members' seeds
    warm_start: bool = False  # round r's members start from round r − 1's weights and scalers (Be2: worse than anew)

    def __post_init__(self) -> None:
        checks = [
            (bool(self.candidates), "candidates: give at least one structure spec to sample candidates from"),
            (self.per_round >= 1, f"per_round must be ≥ 1, got {self.per_round}"),
            (self.rounds >= 1, f"rounds must be ≥ 1, got {self.rounds}"),
            (self.selection in SELECTIONS, f"selection must be one of {SELECTIONS}, got {self.selection!r}"),
            (self.budget_core_minutes is None or self.budget_core_minutes > 0,
             f"budget_core_minutes must be > 0, got {self.budget_core_minutes}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ParameterError(f"learning config: {message}")
        for selection in self.held_out:
            if not isinstance(selection, Mapping):
                raise ParameterError(f"learning config: held_out: a list of selections ({{dataset: …, split: …}} "
                                     f"or {{ids: […]}}), got {selection!r}")
        for spec in self.candidates:
            if not isinstance(spec, Mapping) or "bulk" not in spec:
                raise ParameterError(f"learning config: candidates: each is a structure spec with bulk: "
                                     f"(as generate's structures:), got {spec!r}")

    @classmethod
    def load(cls, source: Any) -> LearnConfig:
        return load_config(cls, source, "learning config", paths=("output", "generation", "training"))


def learn(config: LearnConfig | Mapping[str, Any] | str | Path, client: Any = None,
          progress: bool = True) -> list[dict[str, Any]]:
    """Run (or go on with) the loop; returns the records of all rounds."""
    from .catalog import Catalog
    from .generate import GenerationConfig
    from .training import TrainingConfig, select_ids

    config = LearnConfig.load(config)
    generation = GenerationConfig.load(config.generation)
    base = TrainingConfig.load(config.training)
    if base.ensemble < 2:
        raise ParameterError(f"learning config: the training config {config.training} trains one network; "
                             "candidates are ranked by an ensemble's spread: set ensemble: K (K ≥ 2)")
    if not base.catalog or Path(base.catalog).resolve() != Path(generation.catalog).resolve():
        raise ParameterError(f"learning config: the training config reads {base.catalog}, the generation config "
                             f"writes {generation.catalog}: acquired cells must land where training reads")
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    records = read_rounds(out, config)
    cat = Catalog.load(base.catalog)
    start = select_ids(cat, base.train, "training")
    held_out = {id: cat.store_path(id) for id in select_ids(cat, config.held_out, "held-out")} if config.held_out else {}
    if rescore(records, out, held_out):
        write_rounds(out, records, config)
    if records and records[-1].get("stopped") and not still_stopped(records[-1], config):
        records.pop()  # the config asks for more (rounds, budget, a lower target): that round goes on
    for r in range(len(records), config.rounds + 1):
        if records and records[-1].get("stopped"):
            break
        acquired = [id for rec in records for id in rec["acquired"]]
        spent = records[-1]["dft_core_minutes"] + records[-1]["acquired_core_minutes"] if records else 0.0
        record = run_round(config, generation, base, r, start + acquired, held_out, spent, client, progress)
        records.append(record)
        write_rounds(out, records, config)
    write_plot(records, out / PLOT_FILE, config.selection)
    return records


def run_round(config: LearnConfig, generation: Any, base: Any, r: int, train_ids: list[str], held_out: dict[str, Path],
              spent: float, client: Any, progress: bool) -> dict[str, Any]:
    """Train on ``train_ids``, evaluate the held-out cells, then (unless the loop stops here)
    rank fresh candidates and acquire the chosen ones."""
    from .trained_model import load_model
    from .training import train

    folder = Path(config.output) / f"round-{r}"
    start = str(Path(config.output) / f"round-{r - 1}" / "model") if config.warm_start and r > 0 else base.warm_start
    trained = train(dataclasses.replace(base, output=str(folder / "model"), train={"ids": train_ids}, warm_start=start,
                                        seed=base.seed + LOOP_SEED_STRIDE * config.seed),
                    client=client, progress=progress)
    model = load_model(trained)
    record: dict[str, Any] = {"round": r, "training_cells": len(train_ids), "dft_core_minutes": spent,
                              "acquired": [], "acquired_core_minutes": 0.0, "stopped": None}
    if held_out:
        record.update(held_out_errors(model, held_out))
    if r == config.rounds:
        return {**record, "stopped": f"{config.rounds} rounds done", "stopped_by": "rounds"}
    if config.budget_core_minutes is not None and spent >= config.budget_core_minutes:
        return {**record, "stopped": f"DFT budget spent ({spent:.1f} of {config.budget_core_minutes:g} core-minutes)",
                "stopped_by": "budget"}
    candidates = sample_candidates(config.candidates, r, config.seed)
    sigma, extrapolated = score_candidates(model, candidates)
    record.update(candidate_sigma_max=float(sigma.max()), candidate_sigma_mean=float(sigma.mean()),
                  candidate_extrapolated_mean=float(extrapolated.mean()))
    if sigma.max() <= config.target_sigma:
        return {**record, "stopped": f"every candidate's σ ≤ {config.target_sigma:g} meV/atom", "stopped_by": "target"}
    chosen = choose(sigma, config.per_round, config.selection, np.random.default_rng([config.seed, r]))
    record["chosen_sigma"] = [float(sigma[i]) for i in chosen]
    ids, cost, failed = acquire(generation, config.dataset, [candidates[i] for i in chosen], folder / "chosen.extxyz",
                                client, progress)
    record.update(acquired=ids, acquired_core_minutes=cost, failed=failed)
    return record


def rescore(records: list[dict[str, Any]], out: Path, held_out: dict[str, Path]) -> bool:
    """Give every recorded round the errors of the held-out cells the config names now, from
    the round's kept model (nothing is retrained: the held-out cells only observe the loop).
    Returns whether any round changed."""
    from .trained_model import load_model

    changed = False
    for record in records:
        if set(record.get("held_out", {})) == set(held_out):
            continue
        for key in HELD_OUT_KEYS:
            record.pop(key, None)
        if held_out:
            record.update(held_out_errors(load_model(out / f"round-{record['round']}" / "model"), held_out))
        changed = True
    return changed


def still_stopped(record: dict[str, Any], config: LearnConfig) -> bool:
    """Whether the reason the loop stopped at ``record`` holds under ``config`` (which may
    have been changed since: more rounds, a larger budget, a lower target)."""
    by = record.get("stopped_by")
    if by == "rounds":
        return record["round"] >= config.rounds
    if by == "budget":  # recorded before any acquisition: its dft_core_minutes is all that was spent
        return config.budget_core_minutes is not None and record["dft_core_minutes"] >= config.budget_core_minutes
    if by == "target":
        return record["candidate_sigma_max"] <= config.target_sigma
    return True


def sample_candidates(specs: list[dict[str, Any]], r: int, loop_seed: int = 0) -> list[Any]:
    """The candidates of round ``r``: each spec sampled with its seed moved on by the round and the loop's seed."""
    from .sampling import configurations

    frames = []
    for spec in specs:
        seed = int(spec.get("seed", 0)) + ROUND_SEED_STRIDE * (r + 1) + LOOP_SEED_STRIDE * loop_seed
        frames += configurations({**spec, "seed": seed})
    return frames


def score_candidates(model: Any, candidates: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Each candidate's calibrated σ of the band energy (meV/atom) and the share of its grid
    points outside the training descriptors, from one pass over its predicted chunks; σ is
    infinite where a member (or every member) cannot place the electrons."""
    import dask

    from .ensemble import member_dos, spread

    sigma, extrapolated = [], []
    for atoms in candidates:
        predicted = model.predict(atoms)
        dos, share = dask.compute(member_dos(predicted), predicted["extrapolated"].mean())
        try:
            sigma.append(1000.0 * spread(predicted, dos=dos.values)["band_energy"]["std"] / len(atoms))
        except ElectronCountError as failure:  # no member can place the electrons: as unsure as a model gets
            log.warning("candidate %d: %s", len(sigma), failure)
            sigma.append(float("inf"))
        extrapolated.append(float(share))
    return np.array(sigma), np.array(extrapolated)


def choose(sigma: np.ndarray, count: int, selection: str, rng: np.random.Generator) -> list[int]:
    """Indices of the candidates to label: the largest σ first, or a random draw."""
    count = min(count, len(sigma))
    if selection == "random":
        return sorted(int(i) for i in rng.choice(len(sigma), count, replace=False))
    return [int(i) for i in np.argsort(-sigma, kind="stable")[:count]]


def acquire(generation: Any, dataset: str, chosen: list[Any], path: Path, client: Any,
            progress: bool) -> tuple[list[str], float, list[str]]:
    """DFT of the chosen cells through ``generate`` (tasks; cells already run are skipped):
    their ids, the core-minutes their DFT took, and the ids of any that failed. The choice is
    written first and read back on a rerun, so a resumed round labels the same cells."""
    import ase.io

    from .generate import generate

    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        ase.io.write(tmp, chosen, format="extxyz")
        os.replace(tmp, path)
    config = dataclasses.replace(generation, structures={"file": str(path)}, dataset=dataset, split="train")
    result = generate(config, client=client, progress=progress)
    ids = sorted(result["done"] + result["skipped"])  # not in the order the runs finished: training reads them in order
    raw = Path(generation.output) / "raw"
    cost = sum(dft_core_seconds(raw / id, generation.qe.mpi_ranks) for id in ids) / 60.0
    return ids, cost, result["failed"]


def dft_core_seconds(folder: Path, ranks: int = 1) -> float:
    """Core-seconds of the pw.x and pp.x runs whose outputs are in ``folder``: their CPU time
    times their MPI ranks."""
    from .generate import qe_seconds

    return qe_seconds(folder, "CPU") * max(1, ranks)


def held_out_errors(model: Any, stores: dict[str, Path]) -> dict[str, Any]:
    """The model's band-energy error and calibrated σ (meV/atom) on each held-out cell ({id: store}),
    and their means. A cell whose predicted DOS cannot hold its electrons on the energy grid has
    no band energy: it is recorded as failed (error NaN, σ ∞, the reason), counted in
    ``held_out_failed`` and left out of the means — a round of a loop far from its data should
    say so, not stop the loop."""
    from .evaluation import evaluate_store

    cells = {}
    for name, store in stores.items():
        try:
            e = evaluate_store(model, store, name)
        except ElectronCountError as failure:
            log.warning("held-out cell %s: %s", name, failure)
            cells[name] = {"error": float("nan"), "sigma": float("inf"), "extrapolated": float("nan"),
                           "failed": str(failure)}
            continue
        cells[name] = {"error": e.band_energy_mev_per_atom, "sigma": e.band_energy_sigma_mev_per_atom,
                       "extrapolated": e.outside_training}
    placed = [c for c in cells.values() if "failed" not in c]
    return {
        "held_out": cells,
        "held_out_error": float(np.mean([abs(c["error"]) for c in placed])) if placed else float("nan"),
        "held_out_sigma": float(np.mean([c["sigma"] for c in placed])) if placed else float("nan"),
        "held_out_failed": len(cells) - len(placed),
    }


#: what a loop's config may change between runs (it then goes on); any other change makes another loop
EXTENSIBLE = ("rounds", "budget_core_minutes", "target_sigma")
#: settings that only observe the loop: changing them re-scores the recorded rounds (:func:`rescore`)
OBSERVERS = ("held_out",)
HELD_OUT_KEYS = ("held_out", "held_out_error", "held_out_sigma", "held_out_failed")


def read_rounds(out: Path, config: LearnConfig | None = None) -> list[dict[str, Any]]:
    """The recorded rounds; with ``config``, checked to be the loop this config runs."""
    path = out / ROUNDS_FILE
    if not path.is_file():
        return []
    saved = json.loads(path.read_text())
    before = saved.get("config")  # absent from the first loops' records
    if config is not None and before is not None:
        now = json.loads(json.dumps(dataclasses.asdict(config)))
        free = EXTENSIBLE + OBSERVERS
        changed = sorted(k for k in before.keys() | now.keys() if k not in free and before.get(k) != now.get(k))
        if changed:
            detail = "; ".join(f"{k}: {before.get(k)!r} then, {now.get(k)!r} now" for k in changed)
            raise MalaflowError(f"{path} records a loop run with other settings ({detail}); restore them, "
                                "or give the loop another output")
    return saved["rounds"]


def write_rounds(out: Path, records: list[dict[str, Any]], config: LearnConfig) -> None:
    """rounds.json, written whole (a stop mid-write leaves the previous version)."""
    tmp = out / f".{ROUNDS_FILE}.tmp"
    tmp.write_text(json.dumps({"malaflow_learning": 1, "config": dataclasses.asdict(config), "rounds": records},
                              indent=1))
    os.replace(tmp, out / ROUNDS_FILE)


def rounds_table(records: list[dict[str, Any]]) -> str:
    """One line per round: data, DFT cost, the candidates' σ, the held-out errors, what was acquired."""
    lines = [f"{'round':>5} {'cells':>5} {'DFT core-min':>12} {'cand. σ max':>11} {'mean':>7} "
             f"{'held-out |Δ|':>12} {'σ':>7} {'acquired':>8}  stopped"]

    def num(value: Any, width: int, digits: int = 1) -> str:
        return f"{value:{width}.{digits}f}" if value is not None else f"{'-':>{width}}"

    for rec in records:
        lines.append(f"{rec['round']:5d} {rec['training_cells']:5d} {num(rec['dft_core_minutes'], 12, 2)} "
                     f"{num(rec.get('candidate_sigma_max'), 11)} {num(rec.get('candidate_sigma_mean'), 7)} "
                     f"{num(rec.get('held_out_error'), 12)} {num(rec.get('held_out_sigma'), 7)} "
                     f"{len(rec['acquired']):8d}  {rec.get('stopped') or ''}"
                     + (f" ({rec['held_out_failed']} held-out failed)" if rec.get("held_out_failed") else ""))
    return "\n".join(lines) + ("\n(σ and errors of the band energy, meV/atom; DFT core-minutes: of the acquired "
                               "cells the round trains on)")


def write_plot(records: list[dict[str, Any]], path: Path, label: str = "") -> Path:
    """PNG: the held-out cells' mean |error| and mean σ, and the candidates' mean σ, per round."""
    from .plots import plot_learning_curves

    return plot_learning_curves({label or "learning": records}, path)
