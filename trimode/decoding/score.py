"""Log-probabilities of a token sequence under the verifier: the causal (AR) model without adapter.

This is what the API reports as ``logprobs`` in every mode. In AR and both self-speculation modes
it is the distribution each emitted token was chosen from (at temperature 1, before top-p), since
the verifier accepts or emits every token there. Diffusion commits tokens from the bidirectional
block's distribution instead; its tokens are scored here all the same, so ``logprobs`` answers
"how likely is this text under the model read left to right" in every mode, which is what
likelihood-based evaluations need.

One causal forward over the whole sequence, no cache: scoring is exact whatever the decoder did,
and costs one prefill. The vocabulary projection runs in chunks of positions so that a long
sequence does not hold a [T, vocab] float matrix at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

CHUNK = 256  # positions per vocabulary projection


@dataclass
class TokenScores:
    """Scores of ``tokens[i]`` for i >= ``start``: ``logprobs[j]`` is log p(tokens[start + j] | the
    tokens before it), None for the sequence's first token (nothing precedes it); ``top[j]``: the
    ``k`` most likely tokens at that position with their log-probabilities, most likely first
    (empty where ``logprobs`` is None)."""

    tokens: list[int]
    start: int
    logprobs: list[float | None] = field(default_factory=list)
    top: list[list[tuple[int, float]]] = field(default_factory=list)

    @property
    def scored(self) -> list[int]:
        return self.tokens[self.start:]

    def total(self, begin: int = 0, end: int | None = None) -> float:
        """Sum of the log-probabilities of ``scored[begin:end]`` (None entries count as 0)."""
        return sum(x for x in self.logprobs[begin:end] if x is not None)


def score(model, tokens: Sequence[int], start: int = 0, top: int = 0) -> TokenScores:
    """Verifier log-probabilities of ``tokens[start:]`` given what precedes each, and the ``top``
    most likely alternatives at each position (0: none)."""
    tokens = [int(t) for t in tokens]
    if not tokens:
        raise ValueError("nothing to score: the token list is empty")
    if not 0 <= start <= len(tokens):
        raise ValueError(f"start must be in [0, {len(tokens)}], got {start}")
    vocab = model.config.vocab_size
    if top < 0 or top > vocab:
        raise ValueError(f"top must be in [0, {vocab}], got {top}")
    out = TokenScores(tokens, start)
    if start == 0:
        out.logprobs.append(None)
        out.top.append([])
    first = max(start, 1)  # the first position with something before it
    if first >= len(tokens):
        return out
    param = next(model.parameters())
    ids = torch.tensor([tokens[:-1]], dtype=torch.long, device=param.device)
    positions = torch.arange(ids.shape[1], device=param.device)[None]
    with torch.inference_mode():
        hidden = model.hidden_states(ids, positions, None, pattern="causal")[0]
        for a in range(first - 1, len(tokens) - 1, CHUNK):
            b = min(a + CHUNK, len(tokens) - 1)
            logp = torch.log_softmax(model.logits(hidden[a:b]).float(), dim=-1)
            target = torch.tensor(tokens[a + 1 : b + 1], device=logp.device)
            out.logprobs.extend(logp.gather(1, target[:, None])[:, 0].tolist())
            if top:
                values, index = logp.topk(top, dim=-1)
                out.top.extend([list(zip(i, v)) for i, v in zip(index.tolist(), values.tolist())])
            else:
                out.top.extend([] for _ in range(b - a))
    return out
