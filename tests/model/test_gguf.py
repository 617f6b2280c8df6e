"""Tests for the GGUF reader, dequantizers and checkpoint loader.

The ``gguf`` package (llama.cpp's Python reader/writer) and transformers serve only as independent
references here: the gguf package writes the synthetic files and dequantizes the reference values,
transformers loads the SmolLM2 file its own way.
"""

from __future__ import annotations

import struct
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from trimode.model.gguf import (  # noqa: E402
    GGUFError,
    GGUFFile,
    build_tokenizer,
    load_gguf,
)
from trimode.model.gguf.quants import DEQUANTIZERS, GGML_TYPES_BY_NAME, dequantize  # noqa: E402

Q = gguf.GGMLQuantizationType


# --------------------------------------------------------------------------------------------------
# Dequantizers
# --------------------------------------------------------------------------------------------------

# Byte offsets of the float16 scale fields in each block; random bytes there may be NaN or inf,
# which would make the comparison meaningless, so the tests write finite values there.
FP16_FIELDS = {
    "Q4_0": [0],
    "Q4_1": [0, 2],
    "Q5_0": [0],
    "Q5_1": [0, 2],
    "Q8_0": [0],
    "Q2_K": [80, 82],
    "Q3_K": [108],
    "Q4_K": [0, 2],
    "Q5_K": [0, 2],
    "Q6_K": [208],
}


def random_blocks(type_name: str, n_blocks: int, rng: np.random.Generator) -> np.ndarray:
    block_size, type_size = gguf.GGML_QUANT_SIZES[Q[type_name]]
    if type_name == "F32":
        return rng.standard_normal(n_blocks).astype("<f4").view(np.uint8)
    if type_name == "F16":
        return rng.standard_normal(n_blocks).astype("<f2").view(np.uint8)
    if type_name == "BF16":
        return (
            (rng.standard_normal(n_blocks).astype("<f4").view("<u4") >> 16)
            .astype("<u2")
            .view(np.uint8)
        )
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for offset in FP16_FIELDS[type_name]:
        scales = rng.uniform(-2.0, 2.0, n_blocks).astype("<f2")
        blocks[:, offset : offset + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    return blocks.reshape(-1)


def test_every_listed_type_has_a_dequantizer():
    expected = {"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"}
    expected |= {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"}
    assert set(DEQUANTIZERS) == expected


@pytest.mark.parametrize("type_name", sorted(DEQUANTIZERS))
def test_block_sizes_match_ggml(type_name):
    ours = GGML_TYPES_BY_NAME[type_name]
    assert (ours.block_size, ours.type_size) == gguf.GGML_QUANT_SIZES[Q[type_name]]
    assert ours.id == Q[type_name].value


@pytest.mark.parametrize("type_name", sorted(DEQUANTIZERS))
def test_dequantize_matches_gguf_reference(type_name):
    rng = np.random.default_rng(sum(map(ord, type_name)))
    block_size, type_size = gguf.GGML_QUANT_SIZES[Q[type_name]]
    n_blocks = 257
    raw = random_blocks(type_name, n_blocks, rng)
    ours = dequantize(raw, type_name)
    # The reference takes quantized data as rows of bytes and plain floats as typed arrays.
    plain = {"F32": "<f4", "F16": "<f2"}
    rows = raw.view(plain[type_name]) if type_name in plain else raw.reshape(1, -1)
    reference = gguf.quants.dequantize(rows, Q[type_name]).reshape(-1).astype(np.float32)
    assert ours.dtype == np.float32
    assert ours.shape == (n_blocks * block_size,)
    assert np.isfinite(ours).all()
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-7)


# Hand-built single blocks for the simple formats: each value written out from the format rules.


def _f16_bytes(x: float) -> bytes:
    return np.float16(x).tobytes()


def test_hand_block_f32_f16_bf16():
    values = [1.5, -2.25, 0.0, 65504.0]
    assert (
        dequantize(np.frombuffer(struct.pack("<4f", *values), np.uint8), "F32").tolist() == values
    )
    f16 = b"".join(_f16_bytes(v) for v in values)
    assert dequantize(np.frombuffer(f16, np.uint8), "F16").tolist() == values
    # bfloat16 of 1.5 is 0x3FC0, of -2.25 is 0xC010
    bf16 = struct.pack("<2H", 0x3FC0, 0xC010)
    assert dequantize(np.frombuffer(bf16, np.uint8), "BF16").tolist() == [1.5, -2.25]


def test_hand_block_q4_0():
    qs = bytes((j % 16) | ((15 - j % 16) << 4) for j in range(16))
    block = _f16_bytes(0.5) + qs
    expected = [0.5 * ((j % 16) - 8) for j in range(16)] + [
        0.5 * (15 - j % 16 - 8) for j in range(16)
    ]
    assert dequantize(np.frombuffer(block, np.uint8), "Q4_0").tolist() == expected


def test_hand_block_q4_1():
    qs = bytes(j | (3 << 4) for j in range(16))
    block = _f16_bytes(0.25) + _f16_bytes(-1.0) + qs
    expected = [0.25 * j - 1.0 for j in range(16)] + [0.25 * 3 - 1.0] * 16
    assert dequantize(np.frombuffer(block, np.uint8), "Q4_1").tolist() == expected


def _q5_block(j_high: set[int]) -> tuple[bytes, list[int]]:
    """qs with value j's nibble = j % 16; fifth bit set for the values in j_high."""
    qh = sum(1 << j for j in j_high)
    qs = bytes((j % 16) | ((j % 16) << 4) for j in range(16))
    quants = [(j % 16) + (16 if j in j_high else 0) for j in range(32)]
    return struct.pack("<I", qh) + qs, quants


def test_hand_block_q5_0():
    body, quants = _q5_block({0, 3, 17, 31})
    block = _f16_bytes(2.0) + body
    expected = [2.0 * (q - 16) for q in quants]
    assert dequantize(np.frombuffer(block, np.uint8), "Q5_0").tolist() == expected


def test_hand_block_q5_1():
    body, quants = _q5_block({1, 15, 16, 30})
    block = _f16_bytes(0.5) + _f16_bytes(3.0) + body
    expected = [0.5 * q + 3.0 for q in quants]
    assert dequantize(np.frombuffer(block, np.uint8), "Q5_1").tolist() == expected


def test_hand_block_q8_0():
    quants = [-128, -1, 0, 1, 127] + list(range(-13, 14))
    assert len(quants) == 32
    block = _f16_bytes(0.125) + struct.pack("<32b", *quants)
    assert dequantize(np.frombuffer(block, np.uint8), "Q8_0").tolist() == [
        0.125 * q for q in quants
    ]


# --------------------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------------------


def write_gguf(path: Path, arch: str, fill) -> Path:
    writer = gguf.GGUFWriter(str(path), arch)
    fill(writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def small_gguf(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "a.weight": rng.standard_normal((2, 3)).astype(np.float32),
        "b.weight": rng.standard_normal((4, 64)).astype(np.float16),
        "c.weight": rng.standard_normal((3, 64)).astype(np.float32),
    }
    q8 = gguf.quants.quantize(tensors["c.weight"], Q.Q8_0)

    def fill(w):
        w.add_uint8("t.u8", 200)
        w.add_int8("t.i8", -100)
        w.add_uint16("t.u16", 60000)
        w.add_int16("t.i16", -30000)
        w.add_uint32("t.u32", 4_000_000_000)
        w.add_int32("t.i32", -2_000_000_000)
        w.add_float32("t.f32", 0.5)
        w.add_uint64("t.u64", 2**63 + 5)
        w.add_int64("t.i64", -(2**62))
        w.add_float64("t.f64", 1e-300)
        w.add_bool("t.true", True)
        w.add_bool("t.false", False)
        w.add_string("t.str", "héllo ✓")
        w.add_array("t.ints", [1, 2, 3])
        w.add_array("t.floats", [0.5, -1.5])
        w.add_array("t.strs", ["a", "", "日本"])
        w.add_array("t.bools", [True, False, True])
        w.add_tensor("a.weight", tensors["a.weight"])
        w.add_tensor("b.weight", tensors["b.weight"])
        w.add_tensor("c.weight", q8, raw_dtype=Q.Q8_0)

    path = write_gguf(tmp_path / "small.gguf", "test", fill)
    return path, tensors, gguf.quants.dequantize(q8, Q.Q8_0)


def test_reader_round_trip(small_gguf):
    path, tensors, c_reference = small_gguf
    f = GGUFFile(path)
    assert f.path == path and f.version == 3
    m = f.metadata
    assert m["general.architecture"] == "test"
    assert (m["t.u8"], m["t.i8"], m["t.u16"], m["t.i16"]) == (200, -100, 60000, -30000)
    assert (m["t.u32"], m["t.i32"], m["t.u64"], m["t.i64"]) == (
        4_000_000_000,
        -2_000_000_000,
        2**63 + 5,
        -(2**62),
    )
    assert m["t.f32"] == 0.5 and m["t.f64"] == 1e-300
    assert m["t.true"] is True and m["t.false"] is False
    assert m["t.str"] == "héllo ✓"
    assert list(m["t.ints"]) == [1, 2, 3]
    assert list(m["t.floats"]) == [0.5, -1.5]
    assert m["t.strs"] == ["a", "", "日本"]
    assert list(m["t.bools"]) == [True, False, True]

    assert set(f.tensors) == {"a.weight", "b.weight", "c.weight"}
    info = f.tensors["c.weight"]
    assert (info.shape, info.ggml_type, info.nbytes) == ((3, 64), "Q8_0", 3 * 2 * 34)
    assert info.offset % 32 == 0 and info.offset >= f.data_offset
    assert f.tensors["a.weight"].ggml_type == "F32" and f.tensors["b.weight"].ggml_type == "F16"
    a, b, c = f.load("a.weight"), f.load("b.weight"), f.load("c.weight")
    assert a.dtype == b.dtype == c.dtype == np.float32
    np.testing.assert_array_equal(a, tensors["a.weight"])
    np.testing.assert_array_equal(b, tensors["b.weight"].astype(np.float32))
    np.testing.assert_array_equal(c, c_reference)
    a[0, 0] = 123.0  # loaded arrays are private copies, not views of the read-only map
    assert f.load("a.weight")[0, 0] != 123.0


def test_reader_accepts_version_2_and_custom_alignment(tmp_path):
    values = np.arange(6, dtype=np.float32).reshape(3, 2)

    def fill(w):
        w.add_custom_alignment(64)
        w.add_string("x", "y")
        w.add_tensor("t", values)
        w.add_tensor("u", values * 2)

    path = write_gguf(tmp_path / "v.gguf", "test", fill)
    data = bytearray(path.read_bytes())
    data[4:8] = struct.pack("<I", 2)  # v2 and v3 files are laid out alike (v3 adds big-endian)
    path.write_bytes(bytes(data))
    f = GGUFFile(path)
    assert f.version == 2 and f.alignment == 64 and f.data_offset % 64 == 0
    assert f.tensors["u"].offset % 64 == 0
    np.testing.assert_array_equal(f.load("u"), values * 2)


def _patched(path: Path, offset: int, new: bytes, tmp_path: Path) -> Path:
    data = bytearray(path.read_bytes())
    data[offset : offset + len(new)] = new
    out = tmp_path / "patched.gguf"
    out.write_bytes(bytes(data))
    return out


def test_bad_magic(small_gguf, tmp_path):
    bad = _patched(small_gguf[0], 0, b"GGML", tmp_path)
    with pytest.raises(GGUFError, match=r"patched\.gguf.*magic b'GGUF'.*b'GGML'"):
        GGUFFile(bad)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(GGUFError, match="not a GGUF file"):
        GGUFFile(empty)


@pytest.mark.parametrize(
    "version, message",
    [(1, "unsupported GGUF version 1"), (4, "unsupported GGUF version 4"), (3 << 24, "big-endian")],
)
def test_unsupported_version(small_gguf, tmp_path, version, message):
    with pytest.raises(GGUFError, match=message):
        GGUFFile(_patched(small_gguf[0], 4, struct.pack("<I", version), tmp_path))


def test_truncated_file(small_gguf, tmp_path):
    path = small_gguf[0]
    data = path.read_bytes()
    f = GGUFFile(path)
    cut = tmp_path / "cut.gguf"
    # Inside the header: the reader runs out of bytes while parsing.
    for size in (6, 30, f.data_offset // 2):
        cut.write_bytes(data[:size])
        with pytest.raises(GGUFError, match=r"cut\.gguf.*truncated"):
            GGUFFile(cut)
    # After the header: a tensor's data would lie past the end.
    cut.write_bytes(data[: f.tensors["c.weight"].offset + 10])
    with pytest.raises(GGUFError, match=r"cut\.gguf.*'c\.weight'.*outside the file"):
        GGUFFile(cut)


def test_unsupported_and_unknown_tensor_types(tmp_path):
    def fill(w):
        w.add_tensor("iq.weight", np.zeros((2, 66), dtype=np.uint8), raw_dtype=Q.IQ2_XXS)
        w.add_tensor("ok.weight", np.ones((2, 2), dtype=np.float32))

    path = write_gguf(tmp_path / "iq.gguf", "test", fill)
    f = GGUFFile(path)  # opening works; only loading that tensor cannot
    assert f.tensors["iq.weight"].shape == (2, 256)
    np.testing.assert_array_equal(f.load("ok.weight"), np.ones((2, 2)))
    with pytest.raises(GGUFError, match=r"iq\.gguf.*'iq\.weight'.*IQ2_XXS"):
        f.load("iq.weight")

    # Patch the type id in the tensor directory to one ggml has never used.
    data = path.read_bytes()
    name = b"iq.weight"
    type_at = data.index(name) + len(name) + 4 + 2 * 8
    assert struct.unpack_from("<I", data, type_at)[0] == Q.IQ2_XXS.value
    with pytest.raises(GGUFError, match=r"'iq\.weight'.*unknown ggml type id 200"):
        GGUFFile(_patched(path, type_at, struct.pack("<I", 200), tmp_path))


# --------------------------------------------------------------------------------------------------
# load_gguf on tiny synthetic models
# --------------------------------------------------------------------------------------------------

TINY = dict(vocab=6, hidden=8, heads=2, kv_heads=1, head_dim=4, ffn=16, layers=2)
# A byte-level vocabulary: enough to encode "ab a" and to check the special-token handling.
TINY_TOKENS = ["<|end|>", "a", "b", "Ġ", "ab", "Ġa"]
TINY_MERGES = ["a b", "Ġ a"]


def llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """The row order llama.cpp's converter writes for llama q/k: per head, interleave the rotary
    halves (row i of the first half, then row i of the second half, ...)."""
    head_dim = w.shape[0] // n_heads
    out = np.empty_like(w)
    for h in range(n_heads):
        for i in range(head_dim // 2):
            out[h * head_dim + 2 * i] = w[h * head_dim + i]
            out[h * head_dim + 2 * i + 1] = w[h * head_dim + head_dim // 2 + i]
    return out


def tiny_model(tmp_path: Path, arch: str, extra_tensor: str | None = None, tied: bool = True):
    """Write a tiny GGUF model; return its path and the HF-order weights it should load as."""
    rng = np.random.default_rng(1)
    t = TINY
    hf: dict[str, np.ndarray] = {}
    gguf_tensors: dict[str, np.ndarray] = {}

    def add(hf_name: str, gguf_name: str, shape: tuple[int, ...], rotary_heads: int = 0):
        w = rng.standard_normal(shape).astype(np.float32)
        hf[hf_name] = w
        permute = rotary_heads and arch == "llama"
        gguf_tensors[gguf_name] = llama_cpp_permute(w, rotary_heads) if permute else w

    q_rows, kv_rows = t["heads"] * t["head_dim"], t["kv_heads"] * t["head_dim"]
    add("model.embed_tokens.weight", "token_embd.weight", (t["vocab"], t["hidden"]))
    add("model.norm.weight", "output_norm.weight", (t["hidden"],))
    if not tied:
        add("lm_head.weight", "output.weight", (t["vocab"], t["hidden"]))
    for i in range(t["layers"]):
        p, b = f"model.layers.{i}", f"blk.{i}"
        add(f"{p}.input_layernorm.weight", f"{b}.attn_norm.weight", (t["hidden"],))
        add(f"{p}.post_attention_layernorm.weight", f"{b}.ffn_norm.weight", (t["hidden"],))
        add(f"{p}.self_attn.q_proj.weight", f"{b}.attn_q.weight", (q_rows, t["hidden"]), t["heads"])
        add(
            f"{p}.self_attn.k_proj.weight",
            f"{b}.attn_k.weight",
            (kv_rows, t["hidden"]),
            t["kv_heads"],
        )
        add(f"{p}.self_attn.v_proj.weight", f"{b}.attn_v.weight", (kv_rows, t["hidden"]))
        add(f"{p}.self_attn.o_proj.weight", f"{b}.attn_output.weight", (t["hidden"], q_rows))
        add(f"{p}.mlp.gate_proj.weight", f"{b}.ffn_gate.weight", (t["ffn"], t["hidden"]))
        add(f"{p}.mlp.up_proj.weight", f"{b}.ffn_up.weight", (t["ffn"], t["hidden"]))
        add(f"{p}.mlp.down_proj.weight", f"{b}.ffn_down.weight", (t["hidden"], t["ffn"]))
        if arch == "qwen2":
            add(f"{p}.self_attn.q_proj.bias", f"{b}.attn_q.bias", (q_rows,), t["heads"])
            add(f"{p}.self_attn.k_proj.bias", f"{b}.attn_k.bias", (kv_rows,), t["kv_heads"])
            add(f"{p}.self_attn.v_proj.bias", f"{b}.attn_v.bias", (kv_rows,))
        if arch == "qwen3":
            add(f"{p}.self_attn.q_norm.weight", f"{b}.attn_q_norm.weight", (t["head_dim"],))
            add(f"{p}.self_attn.k_norm.weight", f"{b}.attn_k_norm.weight", (t["head_dim"],))
    if extra_tensor:
        gguf_tensors[extra_tensor] = np.zeros(4, dtype=np.float32)

    def fill(w):
        w.add_block_count(t["layers"])
        w.add_context_length(128)
        w.add_embedding_length(t["hidden"])
        w.add_feed_forward_length(t["ffn"])
        w.add_head_count(t["heads"])
        w.add_head_count_kv(t["kv_heads"])
        w.add_key_length(t["head_dim"])
        w.add_value_length(t["head_dim"])
        w.add_layer_norm_rms_eps(1e-6)
        w.add_rope_freq_base(500000.0)
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(4.0)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("qwen2" if arch != "llama" else "llama-bpe")
        w.add_token_list(TINY_TOKENS)
        w.add_token_types([3, 1, 1, 1, 1, 1])
        w.add_token_merges(TINY_MERGES)
        w.add_bos_token_id(0)
        w.add_eos_token_id(0)
        w.add_add_bos_token(True)
        w.add_chat_template("{{ messages }}")
        for name, value in gguf_tensors.items():
            w.add_tensor(name, value)

    return write_gguf(tmp_path / f"{arch}.gguf", arch, fill), hf


@pytest.mark.parametrize(
    "arch, tied", [("llama", True), ("llama", False), ("qwen2", True), ("qwen3", False)]
)
def test_load_tiny_model(tmp_path, arch, tied):
    path, expected = tiny_model(tmp_path, arch, tied=tied)
    ck = load_gguf(path, dtype=torch.bfloat16, progress=False)
    assert set(ck.state_dict) == set(expected)
    for name, value in expected.items():
        got = ck.state_dict[name]
        assert got.dtype == torch.bfloat16, name
        torch.testing.assert_close(got, torch.from_numpy(value).to(torch.bfloat16), rtol=0, atol=0)

    cfg = ck.hf_config
    assert cfg["model_type"] == arch
    assert cfg["architectures"] == [
        {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}[
            arch
        ]
    ]
    assert (cfg["vocab_size"], cfg["hidden_size"], cfg["intermediate_size"]) == (6, 8, 16)
    assert (cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"]) == (
        2,
        2,
        1,
    )
    assert cfg["head_dim"] == 4 and cfg["max_position_embeddings"] == 128
    assert cfg["rms_norm_eps"] == pytest.approx(1e-6) and cfg["rope_theta"] == 500000.0
    assert cfg["rope_scaling"] == {"rope_type": "linear", "factor": 4.0}
    assert cfg["tie_word_embeddings"] is tied
    assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (0, 0, None)

    assert ck.add_bos_token is True and ck.bos_token_id == 0 and ck.eos_token_id == 0
    assert ck.chat_template == "{{ messages }}"
    assert ck.special_tokens == {"bos_token": "<|end|>", "eos_token": "<|end|>"}
    # BOS is a flag, not something the tokenizer adds on its own.
    assert ck.tokenizer.encode("ab a<|end|>").ids == [4, 5, 0]
    assert ck.tokenizer.decode([4, 5, 0], skip_special_tokens=False) == "ab a<|end|>"


def test_load_rejects_unknown_tensors_and_architectures(tmp_path):
    path, _ = tiny_model(tmp_path, "llama", extra_tensor="blk.0.mystery.weight")
    with pytest.raises(
        GGUFError, match=r"llama\.gguf.*unexpected tensor 'blk\.0\.mystery\.weight'"
    ):
        load_gguf(path, progress=False)

    def fill(w):
        w.add_tensor("x", np.zeros(2, dtype=np.float32))

    other = write_gguf(tmp_path / "gpt2.gguf", "gptj", fill)
    with pytest.raises(GGUFError, match="architecture 'gptj' is not supported"):
        load_gguf(other, progress=False)


def _tokenizer_file(
    tmp_path: Path, model: str, pre: str | None = None, tokens=TINY_TOKENS
) -> GGUFFile:
    def fill(w):
        w.add_tokenizer_model(model)
        if pre is not None:
            w.add_tokenizer_pre(pre)
        w.add_token_list(tokens)
        w.add_token_merges(TINY_MERGES)

    return GGUFFile(write_gguf(tmp_path / f"tok-{model}-{pre}.gguf", "llama", fill))


def test_tokenizer_unknown_model_and_pre(tmp_path):
    with pytest.raises(GGUFError, match="tokenizer model 'bert'"):
        build_tokenizer(_tokenizer_file(tmp_path, "bert"))
    with pytest.warns(UserWarning, match="unknown pre-tokenizer 'mystery'"):
        tok = build_tokenizer(_tokenizer_file(tmp_path, "gpt2", "mystery"))
    assert tok.encode("ab a").ids == [4, 5]


def test_sentencepiece_tokenizer(tmp_path):
    """A SentencePiece ("llama") vocabulary: best-scoring merges first, <0xXX> byte fallback, and
    llama.cpp's "▁" prefix at the start of the text and after every special or added token."""
    pieces = ["▁", "a", "b", "c", "▁a", "ab", "▁ab", "abc", "▁▁"]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces + ["<tool>"]
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces) + [4]
    # Higher score merges first: "abc" beats "▁ab", so "▁abc" splits as ▁ + abc.
    score = {"▁a": -5.0, "ab": -2.0, "▁ab": -3.0, "abc": -1.0, "▁▁": -4.0}
    scores = [0.0] * 259 + [score.get(p, -100.0) for p in pieces] + [0.0]
    base = 259

    def fill(w):
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_scores(scores)
        w.add_unk_token_id(0)

    tok = build_tokenizer(GGUFFile(write_gguf(tmp_path / "spm.gguf", "llama", fill)))
    pid = {p: base + i for i, p in enumerate(pieces)}

    assert tok.encode("abc").tokens == ["▁", "abc"]
    assert tok.encode("ab ab").tokens == ["▁ab", "▁ab"]
    assert tok.encode(" a").tokens == ["▁▁", "a"]
    assert tok.encode("a\n").ids == [pid["▁a"], 3 + 0x0A]  # "\n" is not a piece: byte fallback
    assert tok.encode("é").ids == [pid["▁"], 3 + 0xC3, 3 + 0xA9]
    assert tok.encode("<s>a<tool>b").tokens == ["<s>", "▁a", "<tool>", "▁", "b"]
    for text in ("abc ab", " a é\n", "a  b"):
        assert tok.decode(tok.encode(text).ids) == text


# --------------------------------------------------------------------------------------------------
# The real SmolLM2 file, against transformers
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_path() -> Path:
    from trimode.model.defaults import smollm2_gguf_path

    try:
        return smollm2_gguf_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def smollm2_ours(smollm2_path):
    start = time.perf_counter()
    checkpoint = load_gguf(smollm2_path, progress=False)
    return checkpoint, time.perf_counter() - start


@pytest.fixture(scope="module")
def smollm2_hf_model(smollm2_path, smollm2_hf):
    # transformers' float32 load of the same file, shared by the session (tests/conftest.py);
    # smollm2_path comes first, so the tests skip when the file is missing.
    return smollm2_hf


@pytest.fixture(scope="module")
def smollm2_hf_tokenizer(smollm2_path):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(
        smollm2_path.parent, gguf_file=smollm2_path.name
    )


@pytest.mark.slow
def test_smollm2_loads_quickly(smollm2_ours):
    checkpoint, seconds = smollm2_ours
    print(f"SmolLM2-135M Q4_1 load_gguf: {seconds:.2f} s")
    assert seconds < 20  # a few seconds when dequantizing is vectorized; minutes if not
    assert len(checkpoint.state_dict) == 272
    assert checkpoint.state_dict["model.embed_tokens.weight"].shape == (49152, 576)


@pytest.mark.slow
def test_smollm2_state_dict_matches_transformers(smollm2_ours, smollm2_hf_model):
    ours = smollm2_ours[0].state_dict
    theirs = smollm2_hf_model.state_dict()
    assert smollm2_ours[0].hf_config["tie_word_embeddings"] is True
    assert set(ours) == set(theirs) - {"lm_head.weight"}
    for name, tensor in ours.items():
        assert tensor.dtype == torch.float32
        assert tensor.shape == theirs[name].shape, name
        diff = (tensor - theirs[name]).abs().max().item()
        assert diff <= 1e-6, f"{name}: max abs diff {diff}"


@pytest.mark.slow
def test_smollm2_config_matches_transformers(smollm2_ours, smollm2_hf_model):
    ours = smollm2_ours[0].hf_config
    theirs = smollm2_hf_model.config
    for key in (
        "model_type",
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "rms_norm_eps",
        "max_position_embeddings",
        "tie_word_embeddings",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "hidden_act",
        "attention_bias",
        "mlp_bias",
    ):
        assert ours[key] == getattr(theirs, key), key
    rope_theta = getattr(theirs, "rope_parameters", None) or {"rope_theta": theirs.rope_theta}
    assert ours["rope_theta"] == rope_theta["rope_theta"] == 100000.0
    assert "rope_scaling" not in ours
    assert ours["architectures"] == ["LlamaForCausalLM"]


TOKENIZER_STRINGS = [
    "Hello, world!",
    "The year 2024 had 366 days.",
    "3.14159 + 2.71828 = 5.85987",
    "price: $1,000.50 (approx. 1k)",
    "a  1",
    "x   42   y",
    "  9  99\n 7",
    "   leading spaces",
    "trailing spaces   ",
    "   ",
    "",
    "tabs\tand\ttabs",
    "\t\tdouble tab",
    "line one\nline two\n\nline four",
    "\r\nwindows\r\n",
    "\n\n\n",
    "naïve café résumé",
    "Ελληνικά και русский",
    "日本語のテキスト",
    "한국어 문장",
    "emoji 😀🎉 and 👨\u200d👩\u200d👧",
    "flags 🇫🇷🇯🇵",
    "½ ² Ⅻ ٣ numerals",
    "def f(x):\n    return x ** 2  # square\n",
    "for (int i = 0; i < 10; ++i) { sum += a[i]; }",
    '<div class="x">&amp;</div>',
    "I'm you're they'll we've she'd",
    "UPPER lower MiXeD",
    "<|im_start|>user\nhi<|im_end|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more",
    "<|im_end|><|im_start|>",
    "<file_sep>main.py<gh_stars>100",
]


def _is_numeral(char: str) -> bool:
    return unicodedata.category(char).startswith("N")  # regex \p{N}


def _isolate_numerals(text: str) -> list[str]:
    """llama.cpp's first "smollm" split: every \\p{N} character on its own."""
    pieces, current = [], ""
    for char in text:
        if _is_numeral(char):
            pieces += [current, char] if current else [char]
            current = ""
        else:
            current += char
    return pieces + [current] if current else pieces


@pytest.mark.slow
@pytest.mark.parametrize("text", TOKENIZER_STRINGS)
def test_smollm2_tokenizer_matches_llama_cpp_rules(smollm2_ours, smollm2_hf_tokenizer, text):
    """llama.cpp's "smollm" pre-tokenizer isolates each numeral, then applies the GPT-2 regex.

    transformers (5.23) skips the first step for GGUF files, so the reference here is transformers
    run on the numeral-isolated pieces; where that changes nothing, plain transformers must agree.
    The two differ only when whitespace or a byte-merge precedes a numeral.
    """
    ours = smollm2_ours[0].tokenizer
    hf = smollm2_hf_tokenizer
    ids = ours.encode(text).ids
    expected = [
        i for piece in _isolate_numerals(text) for i in hf.encode(piece, add_special_tokens=False)
    ]
    assert ids == expected
    plain = hf.encode(text, add_special_tokens=False)
    if plain != expected:
        # Only a numeral after whitespace, or a multi-byte numeral, can end up in a different piece.
        assert any(
            _is_numeral(c) and (not c.isascii() or (i and text[i - 1].isspace()))
            for i, c in enumerate(text)
        ), f"transformers disagrees unexpectedly: {plain} vs {expected}"
    assert ours.decode(ids, skip_special_tokens=False) == text


@pytest.mark.slow
def test_smollm2_numerals_are_split_off_first(smollm2_ours):
    # "a  1" -> "a  " + "1"; the GPT-2 regex keeps the trailing "  " whole (one token "ĠĠ"),
    # where the GPT-2 regex alone would cut "a", " ", " 1".
    encoding = smollm2_ours[0].tokenizer.encode("a  1")
    assert encoding.tokens == ["a", "ĠĠ", "1"]


@pytest.mark.slow
def test_smollm2_tokenizer_specials(smollm2_ours, smollm2_hf_tokenizer):
    checkpoint = smollm2_ours[0]
    tok = checkpoint.tokenizer
    hf = smollm2_hf_tokenizer
    assert tok.get_vocab_size() == len(hf) == 49152
    assert tok.encode("<|im_start|>").ids == [1]
    assert tok.encode("<|im_start|>user\nhi<|im_end|>").ids == [1, 4093, 198, 6004, 2]
    assert checkpoint.add_bos_token is False and hf.add_bos_token is False
    assert (checkpoint.bos_token_id, checkpoint.eos_token_id) == (hf.bos_token_id, hf.eos_token_id)
    assert checkpoint.special_tokens == {
        "bos_token": hf.bos_token,
        "eos_token": hf.eos_token,
        "unk_token": hf.unk_token,
        "pad_token": hf.pad_token,
    }
    assert checkpoint.chat_template == hf.chat_template
    # Control tokens are dropped when decoding with skip_special_tokens, as llama.cpp does.
    assert tok.decode([1, 4093, 198, 6004, 2]) == "user\nhi"
