"""Accepting drafted tokens against the causal (AR) model: the core of self-speculation.

The verifier's distribution ``p[j]`` (from the causal forward at slot j) is the AR model's
prediction for slot j+1; ``draft[j+1]`` was proposed from ``q[j+1]``. Three rules:

* greedy (T = 0): accept while argmax p[j] == draft[j+1]; the bonus is argmax p at the first
  mismatch (or after the last slot). Every emitted token is then the AR argmax: lossless.
* ``speculative`` (T > 0, default): accept draft[j+1] = x with probability min(1, p[j][x] / q[j+1][x]);
  on rejection draw the bonus from the normalised residual max(0, p[j] - q[j+1]); if all are
  accepted draw it from the last p. The emitted tokens are then distributed exactly as AR sampling.
* ``exact-match`` (T > 0, the reference's rule): draw a[j] ~ p[j] and accept while a[j] == draft[j+1].
  Kept for parity; it is biased towards the draft whenever p and q differ.
"""

from __future__ import annotations

import torch

from ..sampling import SamplingParams, probabilities


def accept(
    verify_logits: torch.Tensor,
    draft: list[int],
    q: torch.Tensor | None,
    params: SamplingParams,
    generator: torch.Generator | None,
    rule: str = "speculative",
) -> tuple[int, int]:
    """(accepted drafts c, bonus token) for one row; draft[0] is the already-emitted seed.

    verify_logits: [T, V] causal logits over draft[0..T-1]; q: [T, V] draft distributions (sampling).
    """
    width = len(draft)
    if params.greedy:
        best = verify_logits.argmax(-1).tolist()
        c = 0
        while c < width - 1 and best[c] == draft[c + 1]:
            c += 1
        return c, best[c]
    p = probabilities(verify_logits, params).cpu()
    if rule == "exact-match":
        for j in range(width):
            a = int(torch.multinomial(p[j], 1, generator=generator))
            if j == width - 1 or a != draft[j + 1]:
                return j, a
    if q is None:
        raise ValueError("speculative sampling needs the draft distributions q")
    q = q.cpu()
    for j in range(width - 1):
        x = draft[j + 1]
        ratio = p[j, x] / q[j + 1, x] if q[j + 1, x] > 0 else torch.tensor(float("inf"))
        if float(torch.rand((), generator=generator)) < min(1.0, float(ratio)):
            continue
        residual = (p[j] - q[j + 1]).clamp_min(0)
        if residual.sum() <= 0:  # p == q up to rounding: the residual is p itself
            residual = p[j]
        return j, int(torch.multinomial(residual / residual.sum(), 1, generator=generator))
    return width - 1, int(torch.multinomial(p[width - 1], 1, generator=generator))
