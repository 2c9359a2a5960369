"""``python -m benchmarks [task ...]``: run benchmark tasks and print their tables."""

from __future__ import annotations

import importlib
import sys
import time

from .harness import machine

TASKS = ["descriptors", "training", "data_parallel", "postprocessing", "prediction", "transfer", "transfer_be8",
         "forces", "ensemble", "learning", "al933", "soak"]
DEFAULT = [t for t in TASKS if t != "soak"]  # the soak test runs only when named


def main(argv: list[str]) -> None:
    tasks = argv or DEFAULT
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        sys.exit(f"unknown task(s) {unknown}; tasks: {', '.join(TASKS)}")
    print(f"machine: {machine()}\ndate: {time.strftime('%Y-%m-%d')}\n")
    for task in tasks:
        print(f"## {task}\n")
        print(importlib.import_module(f"benchmarks.{task}").main() + "\n", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
