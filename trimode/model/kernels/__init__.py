"""The CPU float32 matmul kernels that inference projections can run on, and the one of them that
trimode builds itself.

| kernel | what runs | weight copy |
|---|---|---|
| ``plain`` | ``F.linear`` (MKL sgemm) on the [out, in] weight | none |
| ``onednn`` | oneDNN on its blocked layout (``torch.ops.mkldnn``) | one |
| ``trimode`` | ``gemm.c``: 32-column panels streamed once for all rows (up to 12 per pass) | one |

``auto`` is ``trimode`` where it builds, else ``onednn``. On the 2-core EPYC dev box the thirty
SmolLM2-135M layers' projections take 16-17 ms at 1-4 rows with ``trimode`` against 29-42 ms with
oneDNN and 50-65 ms with ``plain``, and 34 against 58 ms at 20 rows: oneDNN's small-M path stays
far below the memory bandwidth (42 GB/s read) and the FMA peak of the machine.

``gemm.c`` is compiled on first use with the machine's C compiler (``-O3 -march=native -fopenmp``,
well under a second) into a cache folder (``$TRIMODE_KERNEL_CACHE``, else
``$XDG_CACHE_HOME/trimode/kernels``, else ``~/.cache/trimode/kernels``), keyed by the source, the
flags, the compiler, the CPU's flags and torch's OpenMP runtime. It runs its threads on the OpenMP
runtime torch has loaded (same library, so one thread pool, not two pools fighting for the cores).
Where it cannot be built (no compiler, another OpenMP runtime, no write access), ``auto`` falls
back to oneDNN and :func:`unavailable_reason` says why.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

KERNELS = ("auto", "trimode", "onednn", "plain")
SOURCE = Path(__file__).with_name("gemm.c")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")


class KernelUnavailable(RuntimeError):
    pass


def _torch_lib() -> Path:
    return Path(torch.__file__).parent / "lib"


def _cache_dir() -> Path:
    if os.environ.get("TRIMODE_KERNEL_CACHE"):
        return Path(os.environ["TRIMODE_KERNEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "trimode" / "kernels"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _build(compiler: str, out: Path) -> None:
    lib = _torch_lib()
    cmd = [compiler, *FLAGS, str(SOURCE), "-o", str(out), f"-L{lib}", f"-Wl,-rpath,{lib}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise KernelUnavailable(f"{' '.join(cmd)} failed: {done.stderr.strip()[-500:]}")


@functools.cache
def _library() -> tuple[ctypes.CDLL | None, str | None]:
    # Cached per process: building and loading a shared library is done once, and what it gives
    # (the library, or why there is none) never changes while the process runs.
    if not sys.platform.startswith("linux"):
        return None, f"the trimode kernel is built on Linux only (this is {sys.platform})"
    if "OpenMP" not in torch.__config__.parallel_info():
        return None, "torch here does not run on OpenMP, the runtime the trimode kernel shares with it"
    if any(_torch_lib().glob("libiomp*")):
        return None, "torch here runs on Intel's OpenMP runtime; the trimode kernel is built for libgomp"
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None, "no C compiler (cc or gcc) on PATH to build the trimode kernel"
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
        key = hashlib.sha256(
            "\n".join([SOURCE.read_text(), " ".join(FLAGS), version, str(_torch_lib()), _cpu_flags()]).encode()
        ).hexdigest()[:16]
        path = _cache_dir() / f"gemm-{key}.so"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # Build beside the target and rename: concurrent processes never load a half-written file.
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
            os.close(fd)
            try:
                _build(compiler, Path(tmp))
                os.replace(tmp, path)
            finally:
                Path(tmp).unlink(missing_ok=True)
        lib = ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError, KernelUnavailable) as e:
        return None, f"the trimode kernel could not be built or loaded: {e}"
    lib.trimode_gemm.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
                                 ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    lib.trimode_gemm.restype = None
    lib.trimode_gemm_panel_width.restype = ctypes.c_int
    return lib, None


def unavailable_reason() -> str | None:
    """None when the trimode kernel is usable here, else why not."""
    return _library()[1]


def resolve(kernel: str) -> str:
    """The kernel ``kernel`` means on this machine (``auto`` resolved); an unknown name or an
    unbuildable ``trimode`` is an error that says why."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown matmul kernel {kernel!r}; expected one of {', '.join(KERNELS)}")
    if kernel == "auto":
        return "trimode" if unavailable_reason() is None else "onednn"
    if kernel == "trimode" and unavailable_reason() is not None:
        raise KernelUnavailable(unavailable_reason())
    return kernel


def pack(weight: torch.Tensor) -> torch.Tensor:
    """[out, in] float32 -> [ceil(out / W)][in][W] panels (W = 32), zero rows padding the last."""
    lib = _library()[0]
    if lib is None:
        raise KernelUnavailable(unavailable_reason())
    width = lib.trimode_gemm_panel_width()
    n, k = weight.shape
    panels = -(-n // width)
    padded = torch.zeros(panels * width, k, dtype=torch.float32)
    padded[:n] = weight.detach()
    return padded.view(panels, width, k).transpose(1, 2).contiguous()


def linear(x: torch.Tensor, packed: torch.Tensor, out_features: int, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ W^T (+ bias)`` for float32 CPU ``x`` [..., in] with ``packed`` from :func:`pack`."""
    lib = _library()[0]
    k = x.shape[-1]
    if packed.shape[1] != k:
        raise ValueError(f"input has {k} features, the packed weight expects {packed.shape[1]}")
    rows = x.reshape(-1, k).contiguous()
    y = torch.empty(*x.shape[:-1], out_features, dtype=torch.float32)
    if rows.shape[0]:
        b = bias.detach().float().contiguous() if bias is not None else None
        lib.trimode_gemm(rows.data_ptr(), rows.shape[0], k, packed.data_ptr(), out_features, y.data_ptr(),
                         b.data_ptr() if b is not None else None, torch.get_num_threads())
    return y
