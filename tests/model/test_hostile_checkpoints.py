"""Hostile checkpoints: each is refused with one line naming the file and the problem, before
anything outside the folder is opened and before memory is taken, and never with a traceback."""

from __future__ import annotations

import json
import os
import random
import re
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from trimode.cli import main
from trimode.config import preset
from trimode.model import CheckpointError, load, new_model
from trimode.model.convert import add_drafting_adapter, set_mask_token
from trimode.model.delta import DELTA_FILE, ROWS_FILE, save_delta
from trimode.model.loading import save_pretrained

WEIGHTS, CONFIG, ADAPTER = "model.safetensors", "config.json", "linear_spec_lora"


def copy_checkpoint(src: Path, dst: Path) -> Path:
    """A writable copy of a checkpoint folder (the shared fixtures are read-only)."""
    for path in sorted(src.rglob("*")):
        if path.name in ("golden.json", "forward_logits.safetensors"):
            continue
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    return dst


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in load_file(str(path)).items()}  # no views of a file about to be rewritten


def set_config(folder: Path, **fields) -> None:
    path = folder / CONFIG
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def set_json(path: Path, **fields) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def patch_weights(folder: Path, change) -> None:
    state = tensors(folder / WEIGHTS)
    change(state)
    save_file(state, str(folder / WEIGHTS))


def _cut(d):
    data = (d / WEIGHTS).read_bytes()
    (d / WEIGHTS).write_bytes(data[: len(data) // 2])


def _header_length(d, n):
    data = (d / WEIGHTS).read_bytes()
    (d / WEIGHTS).write_bytes(struct.pack("<Q", n) + data[8:])


def _nan_in(name):
    def change(state):
        state[name][0, 0] = float("nan")
    return change


def _index(d, shard):
    names = list(tensors(d / WEIGHTS))
    (d / WEIGHTS).rename(d.parent / "outside.safetensors")  # a valid file, but not the checkpoint's
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": dict.fromkeys(names, shard)}))


# id -> (what to do to a copy of the NLD fixture, the file the error must name, what it must say)
CASES = {
    "truncated-safetensors": (_cut, WEIGHTS, r"ends at byte \d+ .* \(truncated file\?\)"),
    "pickle-renamed": (lambda d: torch.save(tensors(d / WEIGHTS), str(d / WEIGHTS)), WEIGHTS, "looks like a pickle"),
    "random-bytes": (lambda d: (d / WEIGHTS).write_bytes(random.Random(0).randbytes(5000)), WEIGHTS,
                     "not a safetensors file"),
    "huge-header": (lambda d: _header_length(d, 2**40), WEIGHTS, "claims 1099511627776 bytes, more than"),
    "header-past-the-end": (lambda d: _header_length(d, 10**6), WEIGHTS, "claims 1000000 bytes, but only"),
    "header-not-json": (lambda d: (d / WEIGHTS).write_bytes(struct.pack("<Q", 4) + b"\xff{[x" + bytes(64)), WEIGHTS,
                        "header is not JSON"),
    "three-bytes": (lambda d: (d / WEIGHTS).write_bytes(b"abc"), WEIGHTS, "only 3 bytes"),
    "int64-weights": (lambda d: patch_weights(d, lambda s: s.update({k: (v * 100).long() for k, v in s.items()})),
                      WEIGHTS, "has dtype 'I64'; expected floating-point weights"),
    "bool-weights": (lambda d: patch_weights(d, lambda s: s.update({"encoder.norm.weight": s["encoder.norm.weight"] > 0})),
                     WEIGHTS, "'encoder.norm.weight' has dtype 'BOOL'"),
    "nan-weights": (lambda d: patch_weights(d, _nan_in("encoder.layers.1.mlp.up_proj.weight")), WEIGHTS,
                    "'encoder.layers.1.mlp.up_proj.weight' has 1 NaN or Inf values"),
    "all-nan-weights": (lambda d: patch_weights(d, lambda s: s.update({k: v * float("nan") for k, v in s.items()})),
                        WEIGHTS, "NaN or Inf values"),
    "unfusable-qkv": (lambda d: patch_weights(d, lambda s: s.update({
        "encoder.layers.0.self_attn.k_proj.weight": torch.zeros(32, 65)})), "", r"cannot be fused from .*'k_proj': \(32, 65\)"),
    "hidden-size-string": (lambda d: set_config(d, hidden_size="64"), CONFIG, "hidden_size must be an integer, got '64'"),
    "hidden-size-bool": (lambda d: set_config(d, hidden_size=True), CONFIG, "hidden_size must be an integer, got True"),
    "heads-do-not-divide": (lambda d: set_config(d, hidden_size=63, head_dim=None), CONFIG, "not divisible"),
    "zero-heads": (lambda d: set_config(d, num_attention_heads=0, head_dim=None), CONFIG,
                   "num_attention_heads must be positive"),
    "eps-string": (lambda d: set_config(d, rms_norm_eps="tiny"), CONFIG, "rms_norm_eps must be a finite number"),
    "rope-list": (lambda d: set_config(d, rope_parameters=[1]), CONFIG, "rope_parameters must be an object"),
    "huge-vocab": (lambda d: set_config(d, vocab_size=10**12), CONFIG, "vocab_size=1000000000000 is above the limit"),
    "config-is-a-list": (lambda d: (d / CONFIG).write_text("[1, 2]"), CONFIG, "expected a JSON object, found an array"),
    "config-not-json": (lambda d: (d / CONFIG).write_text("{nope"), CONFIG, "not valid JSON"),
    "tokenizer-not-json": (lambda d: (d / "tokenizer.json").write_text("{nope"), "tokenizer.json",
                           "not a valid tokenizer.json"),
    "tokenizer-wrong-structure": (lambda d: (d / "tokenizer.json").write_text('{"model": 5}'), "tokenizer.json",
                                  "not a valid tokenizer.json"),
    "generation-config-not-json": (lambda d: (d / "generation_config.json").write_text("{"), "generation_config.json",
                                   "not valid JSON"),
    "generation-eos-string": (lambda d: (d / "generation_config.json").write_text('{"eos_token_id": "x"}'),
                              "generation_config.json", "eos_token_id must be a token id"),
    "lora-rank-zero": (lambda d: set_json(d / ADAPTER / "adapter_config.json", r=0), f"{ADAPTER}/adapter_config.json",
                       "r must be a positive integer"),
    "lora-alpha-string": (lambda d: set_json(d / ADAPTER / "adapter_config.json", lora_alpha="32"),
                          f"{ADAPTER}/adapter_config.json", "lora_alpha must be a finite number"),
    "lora-config-list": (lambda d: (d / ADAPTER / "adapter_config.json").write_text("[]"),
                         f"{ADAPTER}/adapter_config.json", "expected a JSON object"),
    "lora-unknown-tensor": (lambda d: save_file({"x": torch.zeros(1)}, str(d / ADAPTER / "adapter_model.safetensors")),
                            f"{ADAPTER}/adapter_model.safetensors", "unsupported adapter tensor 'x'"),
    "lora-nan": (lambda d: save_file({k: v * float("inf") for k, v in tensors(d / ADAPTER / "adapter_model.safetensors")
                                      .items()}, str(d / ADAPTER / "adapter_model.safetensors")),
                 f"{ADAPTER}/adapter_model.safetensors", "NaN or Inf values"),
    "index-escapes-the-folder": (lambda d: _index(d, "../outside.safetensors"), "model.safetensors.index.json",
                                 "'../outside.safetensors' is outside"),
    "index-names-etc-passwd": (lambda d: _index(d, "../" * len(d.parts) + "etc/passwd"), "model.safetensors.index.json",
                               r"'(\.\./)+etc/passwd' is outside"),
    "index-absolute-path": (lambda d: _index(d, "/etc/passwd"), "model.safetensors.index.json", "'/etc/passwd' is outside"),
    "index-is-a-list": (lambda d: (d / "model.safetensors.index.json").write_text("[]"),
                        "model.safetensors.index.json", "expected a JSON object"),
}


@pytest.fixture
def hostile(tmp_path, nld_tiny_dir):
    def make(case: str | None = None) -> Path:
        folder = copy_checkpoint(nld_tiny_dir, tmp_path / (case or "clean"))
        if case:
            CASES[case][0](folder)
        return folder
    return make


def assert_refused(path: Path, named: Path, message: str, **kwargs) -> None:
    with pytest.raises(CheckpointError) as info:
        load(path, pack=False, **kwargs)
    text = str(info.value)
    assert "\n" not in text and str(named) in text, text
    assert re.search(message, text), text


@pytest.mark.parametrize("case", list(CASES))
def test_the_loader_refuses_with_one_line_naming_the_file(hostile, case):
    folder = hostile(case)
    assert_refused(folder, folder / CASES[case][1], CASES[case][2])


def test_a_huge_layer_count_fails_fast(hostile):
    folder = hostile()
    set_config(folder, num_hidden_layers=200000)
    start = time.perf_counter()
    assert_refused(folder, folder / CONFIG, "num_hidden_layers=200000 is above the limit")
    assert time.perf_counter() - start < 2.0


def test_a_config_larger_than_its_weights_is_refused_before_any_weight_is_read(hostile, monkeypatch):
    folder = hostile()
    set_config(folder, vocab_size=2**21, intermediate_size=2**19)  # ~70 GB of float32 weights
    monkeypatch.setattr("trimode.model.loading.load_safetensors", lambda *a: pytest.fail("weights were read"))
    assert_refused(folder, folder, r"shape mismatch for .*: checkpoint has \(\d+, \d+\), config.json implies")


def test_a_weight_that_overflows_the_requested_dtype_is_named(hostile):
    folder = hostile()
    patch_weights(folder, lambda s: s["encoder.norm.weight"].fill_(1e6))
    assert load(folder, pack=False).model.model.norm.weight.max() == 1e6
    assert_refused(folder, folder, r"tensor model.norm.weight as torch.float16 has 64 NaN or Inf", dtype=torch.float16)


@pytest.fixture
def delta(tmp_path):
    cfg = preset("tiny").replace(vocab_size=64, eos_token_ids=(2,))
    base = save_pretrained(new_model(cfg, seed=1), tmp_path / "base")
    model = load(base, pack=False).model
    set_mask_token(model, 5, block_size=4)
    add_drafting_adapter(model, rank=4, init="random", seed=3)
    return save_delta(model, tmp_path / "delta", base, [5])


def _rows(d, **changes):
    state = tensors(d / ROWS_FILE)
    state.update(changes)
    save_file({k: v for k, v in state.items() if v is not None}, str(d / ROWS_FILE))


DELTA_CASES = {
    "meta-not-json": (lambda d: (d / DELTA_FILE).write_text("{"), DELTA_FILE, "not valid JSON"),
    "meta-is-a-list": (lambda d: (d / DELTA_FILE).write_text("[]"), DELTA_FILE, "expected a JSON object"),
    "mask-token-string": (lambda d: set_json(d / DELTA_FILE, mask_token_id="5"), DELTA_FILE,
                          "mask_token_id must be a non-negative integer"),
    "base-is-not-a-checkpoint": (lambda d: set_json(d / DELTA_FILE, base={"path": "/etc/passwd"}), DELTA_FILE,
                                 "base /etc/passwd is not a checkpoint"),
    "base-path-not-a-string": (lambda d: set_json(d / DELTA_FILE, base={"path": 5}), DELTA_FILE,
                               "names neither a known package nor a path"),
    "rows-nan": (lambda d: _rows(d, rows=torch.full((1, 64), float("nan"))), ROWS_FILE, "'rows' has 64 NaN"),
    "rows-missing-ids": (lambda d: _rows(d, ids=None), ROWS_FILE, "expected integer 'ids'"),
    "rows-truncated": (lambda d: (d / ROWS_FILE).write_bytes((d / ROWS_FILE).read_bytes()[:-8]), ROWS_FILE, "truncated"),
    "adapter-rank-zero": (lambda d: set_json(d / ADAPTER / "adapter_config.json", r=0),
                          f"{ADAPTER}/adapter_config.json", "r must be a positive integer"),
}


@pytest.mark.parametrize("case", list(DELTA_CASES))
def test_a_hostile_delta_is_refused_with_one_line(delta, case):
    change, named, message = DELTA_CASES[case]
    change(delta)
    assert_refused(delta, delta / named, message)


def _gguf(tmp_path: Path) -> Path:
    from test_gguf import tiny_model  # pytest puts this folder on sys.path

    return tiny_model(tmp_path, "llama")[0]


def _patch_u64_after(path: Path, marker: bytes, skip: int, value: int) -> None:
    data = bytearray(path.read_bytes())
    at = data.index(marker) + len(marker) + skip
    data[at : at + 8] = struct.pack("<Q", value)
    path.write_bytes(bytes(data))


def test_gguf_dimensions_whose_product_wraps_are_refused(tmp_path):
    path = _gguf(tmp_path)
    # token_embd.weight: name, u32 n_dims, then dims; 2**61 * 8 wraps an int64 product to 0 bytes.
    _patch_u64_after(path, b"token_embd.weight", 4, 2**61)
    assert_refused(path, path, "'token_embd.weight'.*outside the file")


def test_gguf_metadata_of_the_wrong_type_and_nan_tensors_are_named(tmp_path):
    import gguf

    path = _gguf(tmp_path)
    reader = gguf.GGUFReader(str(path))
    field = reader.fields["llama.block_count"]
    data = bytearray(path.read_bytes())
    # Retype llama.block_count from uint32 (4) to float32 (6): same size, wrong type.
    type_at = reader.fields["llama.block_count"].offset + 8 + len("llama.block_count")
    assert struct.unpack_from("<I", data, type_at)[0] == field.types[0].value == 4
    data[type_at : type_at + 4] = struct.pack("<I", 6)
    bad = tmp_path / "typed.gguf"
    bad.write_bytes(bytes(data))
    assert_refused(bad, bad, "'llama.block_count' must be an integer")

    info = next(t for t in reader.tensors if t.name == "output_norm.weight")
    data = bytearray(path.read_bytes())
    data[info.data_offset : info.data_offset + 4] = struct.pack("<f", float("nan"))
    path.write_bytes(bytes(data))
    assert_refused(path, path, "tensor 'output_norm.weight' has 1 NaN or Inf values")


@pytest.mark.parametrize("kind", ["gguf", "safetensors"])
def test_random_damage_is_always_a_clean_error(tmp_path, nld_tiny_dir, kind):
    """Truncation anywhere and random bytes anywhere: a load either works or raises one clean line."""
    if kind == "gguf":
        path = target = _gguf(tmp_path)
    else:
        path = copy_checkpoint(nld_tiny_dir, tmp_path / "m")
        target = path / WEIGHTS
    original = target.read_bytes()
    rng = random.Random(10)  # a seed whose damage includes GGUF dimensions that wrapped an int64 product
    for i in range(120):
        data = bytearray(original)
        if i < 40:
            data = data[: rng.randrange(len(data))]
        else:
            for _ in range(rng.randint(1, 3)):
                at = rng.randrange(min(len(data), 2048) - 8)
                data[at : at + 8] = struct.pack("<Q", rng.choice([0, 7, 2**31, 2**40, 2**61, 2**64 - 1]))
        target.write_bytes(bytes(data))
        try:
            load(path, pack=False)
        except (ValueError, FileNotFoundError) as err:
            assert "\n" not in str(err) and str(path) in str(err), (i, err)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("case", list(CASES))
def test_generate_reports_one_line(capsys, hostile, case):
    """In process, as tests/test_cli.py runs commands: an exception escaping main() fails the test."""
    folder = hostile(case)
    code = main(["generate", "--model", str(folder), "--prompt-ids", "5", "--max-new-tokens", "1"])
    *before, last = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and all(line.startswith("loading ") for line in before), before
    assert last.startswith("trimode: error: ") and str(folder / CASES[case][1]) in last, last


@pytest.mark.parametrize("command, case", [("generate", "truncated-safetensors"), ("serve", "nan-weights")])
def test_the_cli_prints_one_line_and_no_traceback(hostile, command, case):
    folder = hostile(case)
    args = ["--prompt-ids", "5", "--max-new-tokens", "1"] if command == "generate" else ["--port", str(_free_port())]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-m", "trimode.cli", command, "--model", str(folder), *args],
                          check=False, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("trimode: error: ") and str(folder / CASES[case][1]) in last, done.stderr
