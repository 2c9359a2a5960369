"""Directories that appear whole or not at all: written under a hidden temporary name
beside their final path, renamed into place when complete; a killed writer's leftovers
are recognised (host and process recorded in the name) and removed."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

from .errors import StoreError

log = logging.getLogger(__name__)


def move_into_place(complete: Path, path: Path) -> None:
    """Rename a finished directory to ``path``, replacing what is there (each step a
    rename, so ``path`` is always either the old or the new version, never a mix)."""
    if path.exists():
        old = path.parent / f".malaflow-old-{path.name}-{uuid.uuid4().hex[:8]}"
        os.rename(path, old)
        os.rename(complete, path)
        shutil.rmtree(old)
    else:
        os.rename(complete, path)


# who made a temporary: a hash of the host name and the process id, so another process can
# tell a killed run's leftovers (owner gone) from a run in progress
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_TEMPORARY = re.compile(r"\.malaflow-tmp-.+-h(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]{8}")


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporaries in ``folder`` whose writer (on this host) no longer runs."""
    removed = []
    for tmp in folder.glob(".malaflow-tmp-*"):
        m = _TEMPORARY.fullmatch(tmp.name)
        if m and m["host"] == _HOST and not _running(int(m["pid"])):
            log.warning("removing %s, left by a run that was killed", tmp)
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_directory(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``path`` only if the block succeeds.

    The temporary sits beside ``path`` (same file system, so the rename is atomic)
    under a hidden name; on any exception it is removed and nothing is left behind.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise StoreError(f"{path} exists already; replace it with overwrite=True (--overwrite / --force at the command line) or choose another path")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    tmp = path.parent / f".malaflow-tmp-{path.name}-h{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        move_into_place(tmp, path)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise StoreError(f"no space left on the device writing {path} ({exc.strerror}); nothing of it was kept "
                         "and existing data is untouched: free space and run the command again") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
