"""The tokens every mode emits on fixed prompts and settings, as one JSON line (and its sha256).

Run on two commits to show a change kept every mode's output: ``python bench/scripts/mode_tokens.py``
from each checkout (``PYTHONPATH=<checkout>`` so that checkout's ``trimode`` is imported). It uses
only APIs that both sides of the refactoring of issue #15 have: a tiny random tri-mode model (with a
random drafting adapter) and the default model, every mode, greedy and seeded sampling, batch 1
and a ragged batch of 3.
"""

from __future__ import annotations

import hashlib
import json
import sys

import torch

import trimode
from trimode.config import preset
from trimode.decoding import GenerationConfig, decoder_for
from trimode.model import load, new_model
from trimode.model.convert import add_drafting_adapter, set_mask_token
from trimode.model.defaults import default_model_path
from trimode.sampling import SamplingParams

MODES = ("ar", "diffusion", "linear-spec", "quadratic-spec")


def runs(model, prompts, eos):
    out = {}
    for mode in MODES:
        for block in (2, 4, 8):
            for temp in (0.0, 0.8):
                cfg = GenerationConfig(max_new_tokens=24, eos_token_ids=eos, block_size=block,
                                       sampling=SamplingParams(temperature=temp, seed=7),
                                       threshold=0.7 if mode == "diffusion" else 0.9,
                                       draft_threshold=0.0)
                dec = decoder_for(mode, model)
                single = [dec.generate([p], cfg).sequences[0] for p in prompts]
                batched = dec.generate(prompts, cfg).sequences
                out[f"{mode}/B{block}/T{temp}"] = {"single": single, "batched": batched}
    return out


def main() -> int:
    torch.manual_seed(0)
    tiny = new_model(preset("tiny"), seed=3)
    set_mask_token(tiny, tiny.config.vocab_size - 1, block_size=4)
    add_drafting_adapter(tiny, rank=4, init="random", seed=1)
    prompts = [[5, 17, 3], [9, 9, 2, 40, 11, 8], [1]]
    result = {"tiny": runs(tiny, prompts, ())}
    loaded = load(default_model_path())
    tok = loaded.tokenizer
    texts = ["def add(a, b):", "The capital of France is", "Write a haiku about rain."]
    result["default_model"] = runs(loaded.model, [tok.encode(t) for t in texts], loaded.eos_token_ids)
    line = json.dumps(result, sort_keys=True)
    print(json.dumps({"trimode": trimode.__file__, "sha256": hashlib.sha256(line.encode()).hexdigest()}), file=sys.stderr)
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
