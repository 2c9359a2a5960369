"""``python -m malaflow.cli``."""

from . import main

main()
