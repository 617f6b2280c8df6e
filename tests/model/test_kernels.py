"""The CPU matmul kernels: trimode's own kernel pinned against F.linear, row by row and bit for bit
across batch sizes, inside the model, and its fallback when it cannot be built."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import random_prompts, tri_tiny

from trimode.config import preset
from trimode.decoding import decoder_for
from trimode.decoding.base import GenerationConfig
from trimode.model import kernels, new_model

needs_kernel = pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler to build the kernel"
)


@needs_kernel
def test_the_kernel_builds_on_this_machine():
    # Where a compiler exists the kernel must build: a silent fallback would hide a broken build.
    assert kernels.unavailable_reason() is None
    assert kernels.resolve("auto") == "trimode"


@needs_kernel
@pytest.mark.parametrize("m, k, n, bias", [(1, 576, 960, False), (3, 64, 48, True), (13, 7, 33, False),
                                          (20, 96, 64, True), (20, 576, 96, False), (37, 1536, 40, True), (25, 40, 31, False), (130, 32, 96, True)])
def test_the_kernel_matches_f_linear(m, k, n, bias):
    gen = torch.Generator().manual_seed(m * n)
    w = torch.randn(n, k, generator=gen)
    b = torch.randn(n, generator=gen) if bias else None
    x = torch.randn(m, k, generator=gen)
    got = kernels.linear(x, kernels.pack(w), n, b)
    assert got.shape == (m, n)
    # float32 rounding of a K-term sum of unit-size terms (a sequential one here, a blocked one in
    # MKL) is at most about K * 2**-24 per partial sum's size, so both are held to a float64 reference.
    exact = F.linear(x.double(), w.double(), b.double() if bias else None)
    bound = 4e-7 * k * max(1.0, k**0.5 / 8)
    assert (got.double() - exact).abs().max() < bound
    assert (F.linear(x, w, b).double() - exact).abs().max() < bound


@needs_kernel
def test_the_kernel_takes_any_leading_shape_and_strided_input():
    w = torch.randn(40, 24)
    x = torch.randn(2, 24, 5).transpose(1, 2)  # [2, 5, 24], not contiguous
    torch.testing.assert_close(kernels.linear(x, kernels.pack(w), 40, None), F.linear(x, w), rtol=1e-5, atol=1e-5)
    assert kernels.linear(torch.empty(0, 24), kernels.pack(w), 40, None).shape == (0, 40)
    with pytest.raises(ValueError, match="24"):
        kernels.linear(torch.randn(3, 25), kernels.pack(w), 40, None)


@needs_kernel
def test_a_row_is_bitwise_the_same_alone_or_in_any_block():
    # One fixed order of summation per output: a verify forward over B tokens computes each
    # projection exactly as the single-token AR step does.
    # K = 300 spans three of the 128-step chunks that a forward of 13-48 rows walks.
    w = torch.randn(100, 300)
    packed = kernels.pack(w)
    rows = torch.randn(60, 300)
    alone = torch.cat([kernels.linear(rows[i : i + 1], packed, 100, None) for i in range(60)])
    for m in (2, 8, 12, 13, 20, 29, 48, 49, 60):
        assert torch.equal(kernels.linear(rows[:m], packed, 100, None), alone[:m])


@needs_kernel
@pytest.mark.parametrize("kernel", ["trimode", "onednn"])
def test_a_packed_model_gives_the_plain_logits(kernel):
    model = new_model(preset("tiny"), seed=3)
    ids = torch.randint(0, 256, (2, 11))
    with torch.inference_mode():
        plain = model(ids)
        assert model.pack_weights(kernel) > 0 and model.kernel == kernel
        packed = model(ids)
        model.pack_weights("plain")
        assert model.kernel == "plain" and not model.packed
    torch.testing.assert_close(packed, plain, rtol=1e-5, atol=1e-5)


@needs_kernel
@pytest.mark.parametrize("mode, block", [("linear-spec", 4), ("quadratic-spec", 3)])
def test_greedy_speculation_on_the_kernel_equals_greedy_ar(mode, block):
    model = tri_tiny(seed=5)
    model.pack_weights("trimode")
    config = GenerationConfig(max_new_tokens=24, eos_token_ids=(2,), block_size=block, use_adapter=True)
    ar = decoder_for("ar", model)
    spec = decoder_for(mode, model)
    for p in random_prompts(6, seed=block):
        assert spec.generate([p], config).sequences[0] == ar.generate([p], config).sequences[0]


def test_unknown_kernels_are_named():
    with pytest.raises(ValueError, match="auto, trimode, onednn, plain"):
        kernels.resolve("blas")


def test_auto_falls_back_to_onednn_when_the_kernel_cannot_be_built(tmp_path):
    code = ("from trimode.model import kernels; "
            "print(kernels.resolve('auto')); print(kernels.unavailable_reason())")
    env = {**os.environ, "CC": "/bin/false", "TRIMODE_KERNEL_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    choice, reason = out.stdout.splitlines()
    assert choice == "onednn" and "could not be built" in reason
    assert not list(tmp_path.iterdir())  # no half-built library is left behind
