"""Size transfer that holds (issue 19, Results II), Be at 298 K: a model trained on 8-atom cells
in which neighbours move independently (examples/generate-be8-train.yaml and
generate-be8-more.yaml: 24 training and 2 validation cells; examples/train-be8-298K.yaml)
predicts the held-out 8-atom cells (examples/generate-be8.yaml) and 36-atom cells, 4.5× the atoms
(examples/generate-be36.yaml, ~30–60 core-minutes each). Data generated and the model trained
when missing. Writes the predicted vs DFT DOS of the largest cell to benchmarks/size-transfer-be36-dos.png.
"""

from __future__ import annotations

from pathlib import Path

from .transfer import EXAMPLES, size_transfer

PLOT = Path(__file__).resolve().parent / "size-transfer-be36-dos.png"


def main() -> str:
    from malaflow.generate import generate

    for name in ("be8-train", "be8-more", "be8", "be36"):
        generate(EXAMPLES / f"generate-{name}.yaml")
    return size_transfer(EXAMPLES / "train-be8-298K.yaml", ["be8-298K", "be36-298K"], PLOT)
