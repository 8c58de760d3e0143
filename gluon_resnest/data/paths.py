"""Output folders checked before long work starts (training, export, calibration), and the
one atomic file writer."""
from __future__ import annotations

import os
import secrets
from typing import Callable

__all__ = ["check_output_folder", "atomic_write"]


def check_output_folder(folder: str, what: str = "output folder", create: bool = False) -> str:
    """``folder`` (absolute) if files can be written into it, else a ValueError or
    FileNotFoundError naming the path and what is wrong.

    With ``create`` the folder may be missing as long as it can be made: its nearest existing
    ancestor must be a writable folder (nothing is created here).
    """
    folder = os.path.abspath(folder)
    existing = folder
    while not os.path.exists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if existing != folder and not create:
        if os.path.isdir(existing):
            raise FileNotFoundError(f"{what} {folder!r} does not exist (create it first)")
    if not os.path.isdir(existing):
        raise ValueError(f"{what} {folder!r} cannot be used: {existing!r} is a file, not a "
                         f"folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {folder!r} is not writable (no write permission on "
                         f"{existing!r})")
    return folder


def atomic_write(path: str, write: Callable[[str], None]) -> str:
    """``write(tmp)`` into a temporary file next to ``path``, then rename it onto ``path``: a
    reader sees the old file or the new one, never a mix. The file gets the mode of any new
    file (0666 minus the umask, as a plain ``open`` gives), not a temp file's 0600."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    while True:
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
