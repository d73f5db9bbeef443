"""What every benchmark records about the run: versions, the machine and the checkout."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def environment(*dists: str) -> dict[str, Any]:
    """Python, platform, CPUs, load, the versions of ``dists`` and the checkout's state."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "versions": versions(*dists),
    }
    git = checkout()
    if git:
        info["git"] = git
    import breaker_machines

    package = Path(breaker_machines.__file__).resolve().parent
    if ROOT / "src" not in package.parents:
        info["imported_from"] = str(package)  # not this checkout's src/ (PYTHONPATH)
    info["loadavg"] = os.getloadavg()
    return info


def versions(*dists: str) -> dict[str, str | None]:
    """The installed version of each of ``dists`` (None: not installed)."""
    found: dict[str, str | None] = {}
    for dist in dists:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = None
    return found


def checkout() -> dict[str, Any]:
    """The commit measured, and whether ``src/`` had uncommitted changes ({} outside git)."""
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--", "src")
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {"head": head, "src_modified": bool(dirty)}


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
