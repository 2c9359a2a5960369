"""The epochs of a training run: optimizer, schedule, early stopping, checkpoints.

A :class:`TrainingRun` holds everything the next epoch depends on (weights, optimizer,
schedule, early-stopping state, RNG), writes it to ``checkpoint.pt`` every N epochs and
takes it back on resume. The same loop runs in one process or as one replica of a
data-parallel run (:mod:`malaflow.data_parallel`): the loss of a replica's part of a batch
is scaled by the global batch size, so the gradients DDP averages are the single
process's, and losses are summed over replicas before anyone decides on them.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .data import BatchLoader
from .data_parallel import SOLO, Replica
from .errors import MalaflowError

log = logging.getLogger(__name__)


class TrainingRun:
    """One training run's state from epoch to epoch (see the module docstring)."""

    def __init__(self, config: Any, network: torch.nn.Module, device: torch.device, replica: Replica = SOLO,
                 snapshots: dict[str, list[str]] | None = None) -> None:
        self.config, self.network, self.device, self.replica = config, network, device, replica
        self.snapshots = dict(snapshots or {})  # {"train": ids, "validation": ids} the selections resolved to
        self.model = replica.wrap(network, device)  # what the training forward pass goes through
        self.optimizer = (torch.optim.Adam if config.optimizer == "adam" else torch.optim.SGD)(
            network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.scheduler = {
            "none": lambda: None,
            "plateau": lambda: torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, factor=config.schedule_factor, patience=config.schedule_patience),
            "step": lambda: torch.optim.lr_scheduler.StepLR(
                self.optimizer, step_size=config.schedule_patience, gamma=config.schedule_factor),
            "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=config.epochs),
        }[config.schedule]()
        self.checkpoint_file = Path(config.output) / "checkpoint.pt"
        self.state: dict[str, Any] = {"epoch": 0, "history": [], "best_val": float("inf"), "best_state": None,
                                      "bad_epochs": 0}

    # ------------------------------------------------------------------ checkpoints

    def restore(self) -> None:
        """Continue from the checkpoint in the output folder, if there is one."""
        if not self.checkpoint_file.is_file():
            return
        saved = torch.load(self.checkpoint_file, map_location=self.device, weights_only=False)
        self._check_continuable(saved)
        self.network.load_state_dict(saved["network"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        self.state = saved["state"]
        log.info("resuming %s after epoch %d", self.config.output, self.state["epoch"])

    def _check_continuable(self, saved: dict[str, Any]) -> None:
        """The checkpoint's run may go on under this config: the same settings but for
        where it lives, on how many workers, and a number of epochs raised (continuing a
        finished run trains to the weights of one run of the longer length)."""
        before, now = settings(saved["config"]), settings(dataclasses.asdict(self.config))
        changed = sorted(k for k in before.keys() | now.keys() if k != "epochs" and before.get(k) != now.get(k))
        if changed:
            detail = "; ".join(f"{k}: {before.get(k)!r} then, {now.get(k)!r} now" for k in changed)
            raise MalaflowError(f"{self.checkpoint_file} was trained with other settings ({detail}); "
                                "restore them, or remove the checkpoint, or train into another output")
        for split, ids in (saved.get("snapshots") or {}).items():  # absent from older checkpoints
            if split in self.snapshots and sorted(ids) != sorted(self.snapshots[split]):
                raise MalaflowError(
                    f"{self.checkpoint_file} was trained on other {split} snapshots: its selection "
                    f"{getattr(self.config, 'train' if split == 'train' else 'validation')} matched {len(ids)} then, "
                    f"{len(self.snapshots[split])} now (the catalog changed). Its weights belong to those data and "
                    "their scaling; train into another output, or select the snapshots by ids")
        done = saved["state"]["epoch"]
        if self.config.epochs < done:
            raise MalaflowError(f"{self.checkpoint_file} has {done} epochs done; epochs: {self.config.epochs} "
                                "is fewer (raise it to continue, or train into another output)")
        if self.config.epochs > done and saved["state"]["bad_epochs"] >= self.config.early_stopping > 0:
            log.warning("%s stopped early at epoch %d (no validation gain in %d epochs): more epochs do not "
                        "continue it", self.config.output, done, self.config.early_stopping)
        if self.config.epochs != before["epochs"] and self.config.schedule == "cosine":
            raise MalaflowError(f"schedule: cosine anneals over the {before['epochs']} epochs this run was started "
                                f"with; it cannot be continued to {self.config.epochs} (use another schedule)")

    def save_checkpoint(self) -> None:
        if not self.replica.writes:
            return
        tmp = self.checkpoint_file.with_name(".checkpoint.pt.tmp")
        try:
            torch.save({
                "config": dataclasses.asdict(self.config), "network": self.network.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(), "state": self.state, "snapshots": self.snapshots,
            }, tmp)
            os.replace(tmp, self.checkpoint_file)
        except (OSError, RuntimeError) as exc:  # torch reports a full disk as a RuntimeError
            tmp.unlink(missing_ok=True)
            raise MalaflowError(f"could not write the checkpoint of epoch {self.state['epoch']} to "
                                f"{self.checkpoint_file} ({exc}); the previous one is intact — free space "
                                "and train again to resume") from None

    # ------------------------------------------------------------------ epochs

    @property
    def stopped(self) -> bool:
        """Early stopping: no validation improvement for ``early_stopping`` epochs."""
        return self.state["bad_epochs"] >= self.config.early_stopping > 0

    def fit(self, loader: BatchLoader, val_loader: BatchLoader, max_epochs: int | None, progress: bool) -> None:
        """Epochs up to ``config.epochs`` (at most ``max_epochs`` more), checkpointing."""
        config, state = self.config, self.state
        last = config.epochs if max_epochs is None else min(config.epochs, state["epoch"] + max_epochs)
        bar = tqdm(range(state["epoch"] + 1, last + 1), desc=f"training {Path(config.output).name}", unit="epoch",
                   initial=state["epoch"], total=config.epochs, disable=not progress)
        for epoch in bar:
            if self.stopped:
                break
            t0 = time.perf_counter()
            train_loss = self._train_epoch(loader, epoch)
            val_loss = self.evaluate(val_loader)
            if self.scheduler is not None:
                self.scheduler.step(val_loss) if config.schedule == "plateau" else self.scheduler.step()
            lr = self.optimizer.param_groups[0]["lr"]
            row = {"epoch": epoch, "train_loss": train_loss, "validation_loss": val_loss,
                   "learning_rate": lr, "seconds": time.perf_counter() - t0}
            state["history"].append(row)
            if val_loss < state["best_val"]:
                state["best_val"], state["bad_epochs"] = val_loss, 0
                state["best_state"] = {k: v.detach().cpu().clone() for k, v in self.network.state_dict().items()}
            else:
                state["bad_epochs"] += 1
            state["epoch"] = epoch
            bar.set_postfix(train=f"{train_loss:.3e}", val=f"{val_loss:.3e}", lr=f"{lr:.1e}")
            if epoch % config.checkpoint_every == 0 or epoch == last or self.stopped:
                self.save_checkpoint()
            self.replica.report(row)
        bar.close()
        if state["epoch"] < config.epochs and not self.stopped:
            log.info("%s: stopped after epoch %d of %d; train again to resume", config.output, state["epoch"],
                     config.epochs)

    def _train_epoch(self, loader: BatchLoader, epoch: int) -> float:
        self.model.train()
        scale = self.replica.size  # DDP averages over replicas; the global batch's mean is wanted
        total, count = 0.0, 0
        for xb, yb, n in loader.shard_epoch(epoch):
            xb, yb = torch.from_numpy(xb).to(self.device), torch.from_numpy(yb).to(self.device)
            self.optimizer.zero_grad()
            per_point = ((self.model(xb) - yb) ** 2).mean(dim=1)
            loss = per_point.sum() * (scale / n)
            loss.backward()
            self.optimizer.step()
            total += float(per_point.detach().sum())
            count += len(xb)
        total, count = self.replica.sum(total, count)
        return total / count

    def evaluate(self, loader: BatchLoader) -> float:
        """Mean squared error per point and output over the loader's points (all replicas')."""
        self.network.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for xb, yb, _ in loader.shard_epoch(0):
                pred = self.network(torch.from_numpy(xb).to(self.device))
                total += float(torch.nn.functional.mse_loss(pred, torch.from_numpy(yb).to(self.device),
                                                            reduction="sum")) / yb.shape[1]
                count += len(xb)
        total, count = self.replica.sum(total, count)
        return total / count

    def write_history(self) -> None:
        out = Path(self.config.output)
        history = self.state["history"]
        (out / "history.json").write_text(json.dumps(history, indent=1))
        with open(out / "history.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["epoch", "train_loss", "validation_loss", "learning_rate", "seconds"])
            writer.writeheader()
            writer.writerows(history)


def settings(config: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint must agree on to be continued: all but where it lives (a
    training folder may be moved, e.g. from an interrupted study trial to its retry)
    and on how many workers it runs (the same batches and weights whatever the count);
    ``ensemble`` is 1 in every member's own config (and absent from older checkpoints, as
    ``bootstrap`` is where it is off)."""
    return {k: v for k, v in config.items()
            if k not in ("output", "workers", "ensemble") and not (k == "bootstrap" and not v)}
