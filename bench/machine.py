"""One description of the machine a benchmark ran on, shared by every script in bench/.

Benchmark tables must name their machine, and on a shared VM the load average says whether a
timing can be trusted, so every script prints the same fields.
"""

from __future__ import annotations

import os
import platform

import torch


def describe(device: str | torch.device = "cpu") -> str:
    """CPU model, cores, torch version and threads, load average, and the GPU when one is used."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    desc = (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"load average {load}")
    if str(device).startswith("cuda") and torch.cuda.is_available():
        desc += f", GPU {torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    return desc
