"""Atomic file placement on a node: temp file + fsync + rename, skipped when the bytes are equal.

A runtime executes plugins and reads conflists at any moment: it must see the old file or the new
one, never a half-written one, and an unchanged file is left alone (its inode and mtime too)."""

from __future__ import annotations

import os
from pathlib import Path

UNCHANGED, INSTALLED, UPDATED = "unchanged", "installed", "updated"


def same_content(path: Path, data: bytes, mode: int | None = None) -> bool:
    try:
        st = path.stat()
        if st.st_size != len(data) or (mode is not None and (st.st_mode & 0o7777) != mode):
            return False
        return path.read_bytes() == data
    except OSError:
        return False


def place(path: Path, data: bytes, mode: int) -> str:
    """Write data at path atomically with the given mode; UNCHANGED when it already holds it."""
    if same_content(path, data, mode):
        return UNCHANGED
    existed = path.exists()
    tmp = path.with_name(f".{path.name}.vnet-tmp{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return UPDATED if existed else INSTALLED


def require_dir(path: Path, create: bool, what: str) -> None:
    """A node directory the runtime reads from must exist: a typo must not silently create one."""
    if path.is_dir():
        return
    if path.exists():
        raise NotADirectoryError(f"{what} {path} is not a directory")
    if not create:
        raise FileNotFoundError(f"{what} {path} does not exist (pass --create-dirs to create it)")
    path.mkdir(parents=True, mode=0o755)
