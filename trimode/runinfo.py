"""What a result file records about the machine it was measured on, and how results are written."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    if hasattr(os, "getloadavg"):
        # Other work on the machine slows every timing; the load when the figures were taken says how much.
        info["load_average_1_5_15min"] = [round(x, 2) for x in os.getloadavg()]
    try:
        import transformers  # only to record its version next to the baselines measured with it

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def write_result(result: dict[str, Any], out: str | Path | None) -> None:
    """Print ``result`` as one JSON line (the last stdout line) and, with ``out``, write it there too."""
    line = json.dumps(result)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
    print(line)
