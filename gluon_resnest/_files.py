"""The one atomic file writer: readers see a file's old content or its new one, never a mix.

It sits below every other module (weight conversion, exports, checkpoints, caches use it).
"""
from __future__ import annotations

import os
import secrets
from typing import Callable

__all__ = ["atomic_write"]


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
