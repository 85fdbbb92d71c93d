"""Paths the user gives: checked up front with a one-line error naming the flag, and written files that
follow the user's umask.

    output_dir(path, flag)   a directory to write into: missing parents are created when the run saves,
                             but a file in the way, or a place that cannot be written, is refused now
    output_file(path, flag)  a file to write: its folder must exist and be writable, and it must not be a folder
    publish(tmp)             give a finished temporary file (mode 0600) the mode a new file gets (0666 & ~umask)
"""

from __future__ import annotations

import os
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish(tmp) -> None:
    """Temporary files are created readable by their owner only; the finished file is readable as any new file."""
    os.chmod(tmp, 0o666 & ~_umask())


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def output_dir(path, flag: str = "--out") -> Path:
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file, not a directory; choose a directory")
    base = _nearest_existing(path.absolute())
    if not base.is_dir():
        raise ValueError(f"{flag} {path}: {base} is a file, so {path} cannot be a directory")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: cannot write in {base} (permission denied)")
    return path


def output_file(path, flag: str) -> Path:
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a directory, not a file")
    parent = path.absolute().parent
    if not parent.exists():
        raise ValueError(f"{flag} {path}: the folder {parent} does not exist")
    if not parent.is_dir():
        raise ValueError(f"{flag} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"{flag} {path}: cannot write there (permission denied)")
    return path
