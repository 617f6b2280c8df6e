"""Token selection: greedy, temperature, top-k, top-p, with one random stream per batch row.

Each row draws from its own ``torch.Generator`` so that a prompt sampled inside a batch gets
exactly the tokens it gets alone with the same seed. :func:`probabilities` exposes the processed
distribution, which speculative sampling needs to compare draft and target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

# Below this temperature sampling is greedy: float32 logits divided by a smaller T differ by more
# than softmax can resolve, so the distribution is one-hot on the argmax anyway (and 1/T overflows
# to inf near 1e-38, which turned whole distributions into NaN).
MIN_TEMPERATURE = 1e-5


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0
    top_k: int = 0  # 0 = no top-k cut
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.temperature >= 0 or self.temperature == float("inf"):  # NaN fails >= too
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature < MIN_TEMPERATURE


def forbid(logits: torch.Tensor, token: int | None) -> torch.Tensor:
    """Logits with ``token`` made impossible (-inf); unchanged when token is None."""
    if token is None:
        return logits
    return logits.index_fill(-1, torch.tensor([token], device=logits.device), float("-inf"))


def make_generators(params: SamplingParams, batch: int, seeds: Sequence[int | None] | None = None) -> list[torch.Generator]:
    """One CPU generator per row: row b uses ``seeds[b]`` if given, else ``params.seed + b``."""
    gens = []
    for b in range(batch):
        seed = seeds[b] if seeds is not None else (None if params.seed is None else params.seed + b)
        g = torch.Generator()
        if seed is None:
            g.seed()
        else:
            g.manual_seed(int(seed))
        gens.append(g)
    return gens


def probabilities(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The distribution sampled from: softmax(logits / T) restricted by top-k and top-p, renormalised.

    logits [..., V] -> probabilities [..., V] in float32. Greedy gives a one-hot on the argmax.
    Any valid setting gives a finite distribution: logits are shifted so that their maximum is 0
    before dividing by T, and top-p always keeps the most likely token.
    """
    logits = logits.float()
    if params.greedy:
        return torch.zeros_like(logits).scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
    logits = (logits - logits.amax(-1, keepdim=True)) / params.temperature
    if params.top_k and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        sorted_probs = sorted_logits.softmax(-1)
        # Keep the smallest prefix whose mass reaches top_p (the token crossing it is kept).
        drop_sorted = (sorted_probs.cumsum(-1) - sorted_probs) >= params.top_p
        drop_sorted[..., 0] = False  # a top_p below float32's resolution still keeps the top token
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits.softmax(-1)


def sample_from(probs: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """One token per row of probs [B, V], row b drawn with ``generators[b]``."""
    out = torch.empty(probs.shape[0], dtype=torch.long)
    cpu = probs.detach().float().cpu()
    for b, g in enumerate(generators):
        out[b] = torch.multinomial(cpu[b], 1, generator=g)[0]
    return out.to(probs.device)


def select(logits: torch.Tensor, params: SamplingParams, generators: Sequence[torch.Generator] | None) -> torch.Tensor:
    """Next token per row from logits [B, V]."""
    if params.greedy:
        return logits.argmax(-1)
    if generators is None or len(generators) != logits.shape[0]:
        raise ValueError("sampling at temperature > 0 needs one generator per batch row")
    return sample_from(probabilities(logits, params), generators)


def candidates(
    logits: torch.Tensor,
    params: SamplingParams,
    generators: Sequence[torch.Generator] | None,
    rows: Sequence[int],
    exclude: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """A candidate token for every slot of logits [B, T, V], for the listed rows only.

    Returns (tokens [B, T], confidence [B, T], probs [B, T, V] or None). Greedy: the argmax, with
    ``exclude`` (the mask id) never chosen, and confidence = softmax of the raw logits at it (as
    the reference computes it). Sampled: one draw per slot from :func:`probabilities` (``exclude``
    removed), confidence = its probability there; ``probs`` is that distribution (a draft's q).
    Rows not listed consume no random numbers, so a row's draws do not depend on its batch.
    """
    logits = logits.float()
    if params.greedy:
        tokens = forbid(logits, exclude).argmax(-1)
        conf = logits.softmax(-1).gather(-1, tokens[..., None])[..., 0]
        return tokens, conf, None
    if generators is None:
        raise ValueError("sampling at temperature > 0 needs one generator per batch row")
    probs = probabilities(forbid(logits, exclude), params)
    tokens = probs.argmax(-1)
    cpu = probs.detach().cpu()
    for b in rows:
        tokens[b] = torch.multinomial(cpu[b], 1, generator=generators[b])[:, 0].to(tokens.device)
    conf = probs.gather(-1, tokens[..., None])[..., 0]
    return tokens, conf, probs
