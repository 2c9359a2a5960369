#!/usr/bin/env bash
# Size transfer, Be at 298 K: train on 2-atom cells, test on 4- and 8-atom cells.
# DFT with Quantum ESPRESSO (pw.x, pp.x: apt-get install quantum-espresso); on 2 cores
# the data take ~25 min, training ~3 min. Every step skips what is already done.
set -euo pipefail
cd "$(dirname "$0")/.."
malaflow generate examples/generate-be2.yaml     # 10 cells of 2 atoms: 8 train, 2 validation
malaflow generate examples/generate-be4.yaml     # 2 cells of 4 atoms: test
malaflow generate examples/generate-be8.yaml     # 2 cells of 8 atoms: test
malaflow train examples/train-be2-298K.yaml
malaflow test models/be2-298K --catalog generated/catalog.yaml --split test --plot size-transfer-dos.png
