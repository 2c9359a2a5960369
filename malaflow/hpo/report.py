"""What a study leaves for a person: the trials table (CSV), the best model, plots of the
history and the parameter importances, and one HTML page holding them."""

from __future__ import annotations

import base64
import csv
import html
import json
import logging
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_directory
from ..catalog import Catalog, default_catalog_path
from ..errors import MalaflowError
from ..training import TrainingConfig, select_ids
from .space import OBJECTIVES, StudyConfig

log = logging.getLogger(__name__)


@dataclass
class StudyResult:
    """What a study found: its best trial's model, parameters and score, and the report."""

    study: Any  # optuna.Study
    best_model: Path
    best_params: dict[str, Any]
    best_value: float
    table: str
    files: dict[str, Path]
    test_errors: list[Any] = field(default_factory=list)  # evaluation.Errors of the best model


def trials_rows(study: Any) -> list[dict[str, Any]]:
    """One row per trial: number, state, objective, epochs, time, parameters."""
    rows = []
    for t in study.trials:
        rows.append({
            "trial": t.number, "state": t.state.name.lower(), "value": t.value,
            "epochs_run": t.user_attrs.get("epochs"), "seconds": t.user_attrs.get("seconds"),
            "retry_of": t.user_attrs.get("retry_of"), **t.params,
            "error": t.user_attrs.get("error"),
        })
    return rows


def format_table(rows: list[dict[str, Any]], objective: str, limit: int | None = None) -> str:
    """The finished trials, best first."""
    done = sorted((r for r in rows if r["value"] is not None), key=lambda r: r["value"])[:limit]
    params = list(dict.fromkeys(k for r in rows for k in r if k not in
                                ("trial", "state", "value", "epochs_run", "seconds", "retry_of", "error")))
    head = ["trial", "state", OBJECTIVES[objective], "epochs run"] + params
    cells = [[str(r["trial"]), r["state"], f"{r['value']:.5g}", str(r["epochs_run"])]
             + [_short(r.get(p)) for p in params] for r in done]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _short(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def report(study: Any, config: StudyConfig) -> StudyResult:
    """Write the study's table (CSV), best model, plots and an HTML page; test the best
    model on ``config.test`` snapshots if given."""
    from ..trained_model import load_model
    from ..plots import plot_param_importances, plot_study_history

    out = Path(config.output)
    rows = trials_rows(study)
    complete = [r for r in rows if r["state"] == "complete"]
    if not complete:
        errors = sorted({r["error"] for r in rows if r["error"]})
        raise MalaflowError(f"study {out}: no trial finished" + (f"; errors: {errors}" if errors else ""))
    files = {"trials": out / "trials.csv"}
    with open(files["trials"], "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    best = study.best_trial
    files["best_model"] = _copy_model(Path(best.user_attrs["model"]), out / "best-model")
    files["history"] = plot_study_history(study, OBJECTIVES[config.objective], out / "history.png")
    importances = _importances(study)
    if importances:
        files["importances"] = plot_param_importances(importances, out / "importances.png")
    test_errors = []
    if config.test:
        from ..evaluation import evaluate_stores

        training = TrainingConfig.load(config.training)
        cat = Catalog.load(training.catalog or default_catalog_path(write=True))
        model = load_model(files["best_model"])
        ids = select_ids(cat, config.test, "test")
        test_errors = [e for e, *_ in evaluate_stores(model, {i: cat.store_path(i) for i in ids})]
    table = format_table(rows, config.objective, limit=10)
    summary = {"study": config.name, "objective": config.objective, "best_trial": best.number,
               "best_value": best.value, "best_params": best.params, "importances": importances,
               "test_errors": [e.as_dict() for e in test_errors], "trials": len(rows)}
    files["best"] = out / "best.json"
    files["best"].write_text(json.dumps(summary, indent=1))
    files["report"] = _write_html(out / "report.html", config, summary, table, files)
    return StudyResult(study, files["best_model"], best.params, best.value, table, files, test_errors)


def _importances(study: Any) -> dict[str, float]:
    """Parameter importances (Optuna's default evaluator); empty while too few trials
    finished or no parameter varied."""
    import optuna

    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}
    try:
        with warnings.catch_warnings():  # about too few trials: the plot is a first look anyway
            warnings.simplefilter("ignore")
            return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError) as exc:
        log.info("no parameter importances yet: %s", exc)
        return {}


def _copy_model(source: Path, dest: Path) -> Path:
    """Copy a trial's model folder (without its training checkpoint) to ``dest``,
    replacing the previous one only once the copy is complete."""
    with atomic_directory(dest, overwrite=True) as tmp:
        shutil.copytree(source, tmp, ignore=shutil.ignore_patterns("checkpoint.pt"))
    return dest


def _write_html(path: Path, config: StudyConfig, summary: dict[str, Any], table: str, files: dict[str, Path]) -> Path:
    images = "".join(
        f'<img alt="{key}" src="data:image/png;base64,{base64.b64encode(files[key].read_bytes()).decode()}">'
        for key in ("history", "importances") if key in files
    )
    params = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(_short(v))}</td></tr>"
                     for k, v in summary["best_params"].items())
    tests = "".join(f"<tr><td>{html.escape(e['snapshot'])}</td><td>{e['band_energy_mev_per_atom']:.3f}</td>"
                    f"<td>{e['fermi_mev']:.3f}</td><td>{e['density_relative']:.5f}</td></tr>"
                    for e in summary["test_errors"])
    page = f"""<!doctype html><meta charset="utf-8"><title>malaflow study {html.escape(summary['study'])}</title>
<style>body{{font-family:sans-serif;max-width:70em;margin:2em auto}}td,th{{padding:0 .8em;text-align:right}}
img{{max-width:49%}}</style>
<h1>Study {html.escape(summary['study'])}</h1>
<p>{summary['trials']} trials; objective {html.escape(OBJECTIVES[config.objective])} on the validation snapshots;
pruner {config.pruner}; seed {config.seed}. Best: trial {summary['best_trial']}, {summary['best_value']:.5g};
model in <code>{html.escape(str(files['best_model']))}</code>.</p>
<table><tr><th>parameter</th><th>best value</th></tr>{params}</table>
{f'<h2>Best model on the test snapshots</h2><table><tr><th>snapshot</th><th>ΔE_band meV/atom</th><th>ΔE_F meV</th><th>density rel.</th></tr>{tests}</table>' if tests else ''}
<h2>Trials</h2><pre>{html.escape(table)}</pre>{images}
"""
    path.write_text(page)
    return path
