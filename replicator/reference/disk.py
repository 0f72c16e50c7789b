"""The reference cache's file operations, none of which follows a symbolic link.

The cache directory belongs to ``ReferenceFiles``; anything found in it is
either what it wrote or something planted there (by mistake or on purpose). A
symbolic link where a folder should be would make a write land outside the
cache, so the helpers here check every component with ``lstat`` and remove a
link (the link itself: what it points to is never touched) or a file that
stands where a folder must be. The cache directory itself may be a link: the
user chose it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Collection
from pathlib import Path, PurePosixPath

#: the prefix of files being written (hidden, removed when found later)
TMP = ".part-"


def real_dir(root: Path, rel: PurePosixPath) -> Path:
    """The folder ``root/rel``, made of real folders down from ``root``: a link or a
    file standing where one of them should be is removed and a folder made instead."""
    current = root
    for part in rel.parts:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            os.mkdir(current)
            continue
        if not stat.S_ISDIR(mode):  # lstat: a link to a folder is not a folder
            os.unlink(current)
            os.mkdir(current)
    return current


def regular_file(root: Path, rel: str) -> os.stat_result | None:
    """``lstat`` of the regular file ``root/rel`` reached through real folders only;
    None if it is missing, not a regular file, or behind a link."""
    current = root
    parts = PurePosixPath(rel).parts
    try:
        for part in parts[:-1]:
            current = current / part
            if not stat.S_ISDIR(os.lstat(current).st_mode):
                return None
        st = os.lstat(current / parts[-1])
    except (FileNotFoundError, NotADirectoryError):
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def remove(path: Path) -> None:
    """Remove a file, a link (not what it points to) or a folder tree; missing is fine."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path)  # removes the links inside, never follows them
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def write_atomic(folder: Path, name: str, data: bytes) -> None:
    """Write ``folder/name`` whole or not at all (a temporary file, synced, renamed)."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TMP)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if stat.S_ISDIR(_mode(folder / name)):
            remove(folder / name)
        os.replace(tmp, folder / name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _mode(path: Path) -> int:
    try:
        return os.lstat(path).st_mode
    except FileNotFoundError:
        return 0


def place(blob: Path, root: Path, rel: str, *, move: bool) -> None:
    """Install the verified file ``blob`` at ``root/rel`` by an atomic rename (``move``)
    or as a copy (renamed into place once whole): a reader sees the old file or the new
    one, never a part. A folder or a link standing at ``rel`` goes first."""
    path = PurePosixPath(rel)
    parent = real_dir(root, path.parent)
    target = parent / path.name
    if stat.S_ISDIR(_mode(target)):  # the old set's folder, where the new set has a file
        remove(target)
    if move:
        os.replace(blob, target)
        return
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=TMP)
    try:
        with os.fdopen(fd, "wb") as out, open(blob, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def clear(root: Path, keep: Collection[str], own: Collection[str]) -> list[str]:
    """Remove under ``root`` every file and link that ``keep`` (paths) does not name,
    except the root's own entries ``own``, then the folders left empty. Links are
    removed, never followed. Returns the visible paths removed (not hidden leftovers)."""
    removed: list[str] = []
    folders: list[Path] = []
    for here, dirs, files in os.walk(root):
        base = Path(here)
        rel = PurePosixPath(base.relative_to(root).as_posix())
        for name in [d for d in dirs if base == root and d in own]:
            dirs.remove(name)
        for name in [d for d in dirs if os.path.islink(base / d)]:
            dirs.remove(name)  # a link where a folder could be: not walked into
            os.unlink(base / name)
        for name in files:
            path = (rel / name).as_posix()
            if path in keep or (base == root and name in own):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(base / name)
            if not name.startswith("."):
                removed.append(path)
        folders.append(base)
    for folder in reversed(folders[1:]):  # the deepest first; the root stays
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty
    return removed
