"""Output folders checked before long work starts (training, export, calibration)."""
from __future__ import annotations

import os

__all__ = ["check_output_folder"]


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
