"""The machine a benchmark ran on: cores, CPU, numpy and its BLAS, thread variables."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_info

from attnlab.bench.timing import torch_default_threads
from mlp.threads import num_threads, usable_cores


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, numpy version, BLAS libraries (threadpoolctl), thread variables, and
    torch's version and default threads when it has been imported."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = threadpool_info()
    blas = [
        {k: lib.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
        | {"file": Path(lib["filepath"]).name}
        for lib in info
    ]
    # numpy's own BLAS: the library shipped in numpy's wheel (numpy.libs) or linked to it
    numpy_dir = Path(np.__file__).resolve().parent.name
    ours = [b for b in info if numpy_dir in b["filepath"] and b["user_api"] == "blas"]
    numpy_blas = ours[0] if ours else next((b for b in info if b["user_api"] == "blas"), {})
    prefixes = ("OPENBLAS", "OMP_", "MKL_", "ATTNLAB_")
    torch = sys.modules.get("torch")
    return {
        "cores": usable_cores(),
        "cpu": cpu,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numpy_blas": {
            k: numpy_blas.get(k) for k in ("internal_api", "version", "architecture", "num_threads")
        },
        "blas": blas,
        "attnlab_threads": num_threads(),
        "env": {k: os.environ[k] for k in sorted(os.environ) if k.startswith(prefixes)},
        "torch": None
        if torch is None
        else {
            "version": torch.__version__,
            "threads": torch_default_threads(),
        },
    }
