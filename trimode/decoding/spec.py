"""What each decoding mode needs and offers, in one table.

Every entry point (CLI, server, engine, demo, benchmarks, evaluations) reads these facts from
:data:`SPECS` instead of restating them:

* ``needs_mask``: the mode reads a mask token (diffusion and both self-speculations);
* ``min_block``: the smallest block the mode can run (self-speculation needs a seed and a draft);
* ``blocks``: the default block per device type. On a CPU a forward over T tokens costs far more
  than one over a single token beyond a few tokens (``trimode bench forward-curve``), so short
  blocks win; on a GPU width is nearly free at batch 1 and the published block of 32 is kept
  (8 for quadratic self-speculation, whose grid forward is B x (B + 1) tokens wide);
* ``scratch``: what one step writes to the cache beyond a row's kept tokens: nothing (AR), one
  block (diffusion, linear-spec) or a B x (B + 1) grid (quadratic-spec); this sizes each row's cache
  and a request's reservation in the engine;
* ``max_block``: the largest block a request may ask for. One step's forward carries ``step_tokens``
  per row (a block, or the B x (B + 1) grid), and its logits take 4 x vocabulary bytes per token
  (quadratic-spec at block 255 asked for 13 GB), so the bound keeps one request's step within a
  few hundred MB (quadratic-spec's 32 is the largest grid the reference implementation runs);
* ``threshold_knob``: the confidence threshold the mode reads, if any (diffusion's commit
  threshold, linear-spec's drafting threshold);
* ``lossless``: at temperature 0 the mode emits exactly greedy AR's tokens;
* ``engine_only``: ``auto`` is a policy of the serving engine (AR or linear self-speculation per
  step), not a decoder of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

# One --threshold / API "threshold" sets both knobs; not given, each keeps its default: diffusion
# commits slots at confidence >= 0.9, linear-spec fills its whole draft in one forward (0).
DEFAULT_THRESHOLD = 0.9
DEFAULT_DRAFT_THRESHOLD = 0.0
DEVICE_TYPES = ("cpu", "cuda")


@dataclass(frozen=True)
class ModeSpec:
    name: str
    needs_mask: bool
    min_block: int
    blocks: Mapping[str, int]
    lossless: bool
    max_block: int = 128
    scratch_kind: str = "block"  # "none" | "block" | "grid"
    threshold_knob: str | None = None  # "threshold" | "draft_threshold"
    engine_only: bool = False

    def default_block(self, device: str = "cpu") -> int:
        """The block this mode runs at on ``device`` ("cpu", "cuda", "cuda:1", ...) when none is given."""
        kind = str(device).split(":")[0]
        return self.blocks.get(kind, self.blocks["cpu"])

    def block(self, given: int | None, device: str = "cpu") -> int:
        """``given`` (checked against :attr:`min_block`), else the device's default."""
        block = self.default_block(device) if given is None else int(given)
        if block < self.min_block:
            raise ValueError(f"mode {self.name!r} needs block_size >= {self.min_block}, got {block}")
        if block > self.max_block:
            raise ValueError(f"mode {self.name!r} takes block_size <= {self.max_block}, got {block}")
        return block

    def scratch(self, block: int) -> int:
        """Cache slots one step may write beyond a row's kept tokens."""
        return {"none": 0, "block": block, "grid": block * (block + 1)}[self.scratch_kind]

    def step_tokens(self, block: int) -> int:
        """Tokens one row adds to one step's forward at most (the new token plus the scratch)."""
        return self.scratch(block) + 1


def thresholds(given: float | None | object = ...) -> dict[str, float | None]:
    """``threshold`` and ``draft_threshold`` from one user-facing threshold (``...`` = not given)."""
    if given is ...:
        return {"threshold": DEFAULT_THRESHOLD, "draft_threshold": DEFAULT_DRAFT_THRESHOLD}
    return {"threshold": given, "draft_threshold": given}


def _spec(name: str, needs_mask: bool, min_block: int, cpu: int, cuda: int, lossless: bool, **kw) -> ModeSpec:
    return ModeSpec(name, needs_mask, min_block, MappingProxyType({"cpu": cpu, "cuda": cuda}), lossless, **kw)


SPECS: Mapping[str, ModeSpec] = MappingProxyType({
    s.name: s
    for s in (
        _spec("ar", needs_mask=False, min_block=1, cpu=1, cuda=1, lossless=True, scratch_kind="none"),
        _spec("diffusion", needs_mask=True, min_block=1, cpu=8, cuda=32, lossless=False, threshold_knob="threshold"),
        _spec("linear-spec", needs_mask=True, min_block=2, cpu=8, cuda=32, lossless=True,
              threshold_knob="draft_threshold"),
        _spec("quadratic-spec", needs_mask=True, min_block=2, cpu=4, cuda=8, lossless=True, scratch_kind="grid",
              max_block=32),
        # Falls back to AR where speculation cannot run, so it needs no mask token; runs linear-spec's block.
        _spec("auto", needs_mask=False, min_block=1, cpu=8, cuda=32, lossless=True, engine_only=True),
    )
})
# The most tokens one engine forward may carry, per device type (rows x what each adds to a step,
# or the prompts joining together). On a CPU a forward's time grows about linearly past ~32
# tokens, so 512 bounds a step near 1.7 s for SmolLM2-135M and batching wider gains little;
# on a GPU width is cheap until the logits' memory (4 x vocabulary bytes per token) dominates.
STEP_TOKENS: Mapping[str, int] = MappingProxyType({"cpu": 512, "cuda": 8192})


def step_tokens_budget(device: str = "cpu") -> int:
    """The per-step token budget of the engine on ``device`` ("cpu", "cuda:1", ...)."""
    return STEP_TOKENS.get(str(device).split(":")[0], STEP_TOKENS["cpu"])


MODES = tuple(name for name, s in SPECS.items() if not s.engine_only)  # the decoders' modes
ENGINE_MODES = tuple(SPECS)  # what the engine and the server accept


def spec_for(mode: str, engine: bool = False) -> ModeSpec:
    """The spec of ``mode``; ``engine`` also accepts the engine's own modes (``auto``)."""
    names = ENGINE_MODES if engine else MODES
    if mode not in names:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(names)}")
    return SPECS[mode]
