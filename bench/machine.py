"""The machine line every benchmark prints next to its figures (BENCHMARKS.md quotes it)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe() -> str:
    """CPU model, cores, and the versions that move the numbers (torch, Ray if installed, Python)."""
    import torch

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import ray

        ray_version = f", Ray {ray.__version__}"
    except ImportError:
        ray_version = ""
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}{ray_version}, "
        f"Python {platform.python_version()}"
    )
