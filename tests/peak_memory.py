"""Peak memory of a section of code, for the tests that bound it (Linux).

Writing "5" to /proc/self/clear_refs resets the process's high-water mark (VmHWM) to
its current RSS, so what a section adds to the peak is measured apart from what imports
and earlier work left behind.
"""

from pathlib import Path


def _status(field: str) -> float:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1]) / 1024


def reset_peak() -> float:
    """Reset the high-water mark; the RSS (MB) it starts from."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status("VmRSS")


def peak_mb() -> float:
    """The high-water mark (MB) since the last reset."""
    return _status("VmHWM")
