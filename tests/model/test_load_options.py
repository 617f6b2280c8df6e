"""``load(path, mask_token=..., config=..., default_mask_token=...)``: a checkpoint's config is
settled before its model is built, and the command line reaches it through one ``load_from_args``."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from conftest import tiny_text_checkpoint  # pytest puts tests/ on sys.path

from trimode.cli_common import UsageError, load_from_args
from trimode.model import load
from trimode.model.convert import RECORDED_BLOCK


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """The tiny text checkpoint made a plain AR model: no mask token, no block size."""
    folder = tiny_text_checkpoint(tmp_path_factory.mktemp("plain"))
    cfg = json.loads((folder / "config.json").read_text())
    for key in ("mask_token_id", "block_size"):
        cfg.pop(key, None)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def test_a_plain_checkpoint_has_no_mask_token(plain):
    assert load(plain).config.mask_token_id is None


@pytest.mark.parametrize("token", ["<mask>", "3", 3])
def test_mask_token_by_text_or_id_brings_the_recorded_block(plain, token):
    cfg = load(plain, mask_token=token).config
    assert (cfg.mask_token_id, cfg.block_size) == (3, RECORDED_BLOCK)


def test_config_fields_are_set_after_the_mask_token(plain):
    cfg = load(plain, mask_token="<mask>", config={"block_size": 8, "denoise_adapter": True}).config
    assert (cfg.mask_token_id, cfg.block_size, cfg.denoise_adapter) == (3, 8, True)


def test_an_unknown_mask_token_is_named(plain):
    with pytest.raises(ValueError, match="'<nope>' is not a token of this checkpoint"):
        load(plain, mask_token="<nope>")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        load(plain, mask_token=500)


def test_the_default_mask_token_only_fills_a_gap(plain, tmp_path):
    assert load(plain, default_mask_token="<mask>").config.mask_token_id == 3
    assert load(plain, default_mask_token="<nope>").config.mask_token_id is None  # not a token here: no mask
    tri = tiny_text_checkpoint(tmp_path)  # already tri-mode (mask id 3): kept
    assert load(tri, default_mask_token="<u100>").config.mask_token_id == 3
    assert load(plain, mask_token="<u100>", default_mask_token="<mask>").config.mask_token_id == 100


def test_load_from_args_applies_device_dtype_and_mask_token(plain):
    args = argparse.Namespace(model=str(plain), device="cpu", dtype="bfloat16", threads=None, no_pack=True,
                              mask_token="<mask>")
    loaded = load_from_args(args)
    assert loaded.config.mask_token_id == 3 and next(loaded.model.parameters()).dtype == torch.bfloat16
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="--device cuda requested but CUDA is not available"):
            load_from_args(argparse.Namespace(**{**vars(args), "device": "cuda"}))
