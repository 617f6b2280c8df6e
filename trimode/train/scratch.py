"""A new tri-mode checkpoint from nothing: a byte-level BPE tokenizer trained on local text plus a
randomly initialised model. Used to train small models on a CPU (tests, the tiny training
benchmark) without any downloaded weights."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from ..config import ModelConfig, preset
from ..model.loading import new_model, save_pretrained
from ..tokenizer import Tokenizer

SPECIALS = ("<|endoftext|>", "<|bos|>", "<|mask|>", "<|pad|>")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|bos|>{{ m['role'] }}\n{{ m['content'] }}<|endoftext|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|bos|>assistant\n{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> Tokenizer:
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(texts, trainer)
    return Tokenizer(backend, bos_token="<|bos|>", eos_token="<|endoftext|>", chat_template=CHAT_TEMPLATE)


def scratch_config(tokenizer: Tokenizer, base: str | ModelConfig = "tiny", block_size: int = 8, **changes) -> ModelConfig:
    cfg = preset(base) if isinstance(base, str) else base
    ids = {name: tokenizer.backend.token_to_id(name) for name in SPECIALS}
    return cfg.replace(vocab_size=tokenizer.vocab_size, eos_token_ids=(ids["<|endoftext|>"],),
                       bos_token_id=ids["<|bos|>"], pad_token_id=ids["<|pad|>"], mask_token_id=ids["<|mask|>"],
                       block_size=block_size, **changes)


def make_scratch_checkpoint(folder: str | Path, texts: Iterable[str], *, vocab_size: int = 1024,
                            base: str | ModelConfig = "tiny", block_size: int = 8, seed: int = 0, **changes) -> Path:
    tokenizer = train_tokenizer(texts, vocab_size)
    model = new_model(scratch_config(tokenizer, base, block_size, **changes), seed=seed)
    return save_pretrained(model, folder, tokenizer=tokenizer)
