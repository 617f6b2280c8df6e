"""Revision on HumanEval: corrupt k tokens of a canonical solution, revise, and count the rounds until
the program passes its tests again.

Per problem, the text is the canonical solution's tokens, read after the problem's prompt, which
is never revised. k positions are drawn (seeded per problem), and each token there is replaced by
a token drawn from the tokens of all canonical solutions, so it is code-like and not an obvious
outlier. A draw whose program still passes is drawn again, up to 20 tries, and the problem is
skipped if none fails. Then rounds of :func:`trimode.decoding.revise.revise` re-mask ``k`` tokens
each, up to ``rounds`` rounds, and the tests run after each round. Reported per k: the share of
corrupted programs passing after each round, with the forwards spent. A round here is a call with
one round, so it scores its text again: one more forward per round than a single multi-round call.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

from ..decoding import GenerationConfig
from ..decoding.revise import revise
from .humaneval import check, problems


def corrupt(tokens: Sequence[int], k: int, pool: Sequence[int], rng: random.Random) -> list[int]:
    """``tokens`` with k distinct positions replaced by other tokens drawn from ``pool``."""
    out = list(tokens)
    for j in rng.sample(range(len(out)), min(k, len(out))):
        out[j] = rng.choice([t for t in pool if t != out[j]])
    return out


def evaluate(loaded, ks: Sequence[int], *, rounds: int, block_size: int, limit: int | None = None, seed: int = 0,
             timeout: float = 5.0) -> dict[str, Any]:
    tok, model = loaded.tokenizer, loaded.model
    items = problems(limit)
    texts = [tok.encode(p["canonical_solution"], add_special_tokens=False) for p in items]
    pool = sorted({t for text in texts for t in text})
    config = GenerationConfig(block_size=block_size)
    results = []
    for k in ks:
        passing = [0] * (rounds + 1)  # index r: passing after r rounds (0: the corrupted program itself)
        tried = forwards = 0
        start = time.perf_counter()
        for n, (p, text) in enumerate(tqdm(list(zip(items, texts)), desc=f"revise k={k}", unit="problem", leave=False)):
            rng = random.Random(f"{seed}:{k}:{n}")
            bad = None
            for _ in range(20):
                candidate = corrupt(text, k, pool, rng)
                if not check(p, tok.decode(candidate), timeout)["correct"]:
                    bad = candidate
                    break
            if bad is None:
                continue
            tried += 1
            context, current, fixed = tok.encode(p["prompt"]), bad, False
            for r in range(1, rounds + 1):
                out = revise(model, context, current, config, rounds=1, per_round=k)
                forwards += out.stats.nfe
                current = out.tokens
                fixed = fixed or check(p, tok.decode(current), timeout)["correct"]
                passing[r] += fixed
        results.append({"k": k, "corrupted": tried, "passing_after_round": passing,
                        "share_passing_after_round": [round(x / tried, 4) if tried else 0.0 for x in passing],
                        "forwards": forwards, "seconds": round(time.perf_counter() - start, 1)})
    return {"task": "humaneval-revise", "problems": len(items), "rounds": rounds, "block_size": block_size,
            "seed": seed, "model": str(loaded.source),
            "metric": "share of corrupted canonical solutions passing their tests after r revision rounds "
                      "(counted as passing from the first round that passes)", "results": results}
