"""Directories on disk: filled whole or not at all (what a failed fill wrote is removed again), and made durable."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def filled_whole(directory: Path) -> Iterator[None]:
    """Run a block that fills `directory` (missing or empty); on any failure, remove what it wrote.

    Ctrl-C included; the directory itself goes too when it did not exist before. Half a key
    directory or half a hub data dir must never be left to be taken for a whole one.
    """
    created = not directory.exists()
    try:
        yield
    except BaseException:
        if created:
            shutil.rmtree(directory, ignore_errors=True)
        elif directory.is_dir():
            for child in directory.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise


def sync_dir(directory: Path) -> None:
    """Fsync `directory` itself: the names created, replaced or removed in it survive a power loss."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
