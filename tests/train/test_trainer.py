"""The trainer on a tiny scratch model: loss-curve golden, accumulation, kill-and-resume, torchrun
with gloo, what each objective trains, and the CLI end to end."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from trimode.model import load
from trimode.train.config import TrainConfig
from trimode.train.objective import ObjectiveConfig
from trimode.train.run import train
from trimode.train.scratch import make_scratch_checkpoint

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

# Losses of the first 8 steps of `_config(...)` (joint objective), recorded on the 2-core CPU dev box.
LOSS_CURVE = [5.038832, 4.615352, 4.487593, 4.959671, 4.175363, 4.270528, 4.120052, 4.021716]


def arithmetic(n: int, seed: int = 0) -> str:
    """Learnable text: 'a + b = c' lines (the answer tokens are predictable from the question)."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        lines.append(f"{a} + {b} = {a + b}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    root = tmp_path_factory.mktemp("scratch")
    data = root / "data.txt"
    data.write_text(arithmetic(600))
    ckpt = make_scratch_checkpoint(root / "model", [arithmetic(300, seed=1)], vocab_size=300, block_size=4)
    return ckpt, data


def _config(scratch, output, **changes) -> TrainConfig:
    ckpt, data = scratch
    base = dict(model=str(ckpt), data=(str(data),), output=str(output), max_steps=8, seq_len=32, batch_size=4,
                lr=3e-3, warmup=2, schedule="cosine", seed=0, progress=False,
                objective=ObjectiveConfig(kind="joint", block_size=4))
    base.update(changes)
    return TrainConfig(**base)


def _losses(output: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (output / "metrics.jsonl").read_text().splitlines()]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "trimode.cli", "train", *args]


def _train_here(*args: str) -> None:
    """``trimode train ARGS`` in this process: the subprocesses' entry point (trimode.cli.main), on one
    thread as they run (ENV), for the reference runs that need no process of their own."""
    from trimode.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", *args]) == 0
    finally:
        torch.set_num_threads(threads)


def _cli_args(scratch, output, steps: int, *extra: str) -> list[str]:
    ckpt, data = scratch
    return ["--model", str(ckpt), "--data", str(data), "--output", str(output), "--max-steps", str(steps),
            "--seq-len", "32", "--batch-size", "4", "--lr", "3e-3", "--warmup", "2", "--schedule", "cosine",
            "--block-size", "4", "--no-progress", *extra]


def test_loss_curve_golden(scratch, tmp_path):
    records = train(_config(scratch, tmp_path / "run"))
    losses = [r["loss"] for r in records]
    assert losses == pytest.approx(LOSS_CURVE, abs=2e-4)
    assert losses == _losses(tmp_path / "run")
    assert records[-1]["ar_loss"] > 0 and records[-1]["masked_tokens"] > 0


def test_a_pause_file_holds_the_run_between_steps_outside_train_s(scratch, tmp_path):
    import threading

    output = tmp_path / "run"
    output.mkdir()
    (output / "PAUSE").touch()
    threading.Timer(1.5, (output / "PAUSE").unlink).start()
    start = time.perf_counter()
    records = train(_config(scratch, output, max_steps=2))
    assert time.perf_counter() - start >= 1.5  # it waited for the file to go
    assert [r["loss"] for r in records] == pytest.approx(LOSS_CURVE[:2], abs=2e-4)
    assert records[-1]["train_s"] == pytest.approx(sum(r["step_s"] for r in records), abs=1e-3)
    assert records[-1]["train_s"] < 1.5 and all(r["cpu_s"] > 0 for r in records)


def test_gradient_accumulation_equals_the_full_batch(scratch, tmp_path):
    full = train(_config(scratch, tmp_path / "full", max_steps=4))
    micro = train(_config(scratch, tmp_path / "micro", max_steps=4, micro_batch=1))
    assert [r["loss"] for r in micro] == pytest.approx([r["loss"] for r in full], abs=1e-5)


def test_killed_run_resumes_with_identical_losses(scratch, tmp_path):
    steps, every = 60, 20
    straight = tmp_path / "straight"
    _train_here(*_cli_args(scratch, straight, steps))
    run = tmp_path / "killed"
    proc = subprocess.Popen(_cli(*_cli_args(scratch, run, steps, "--save-every", str(every))), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = run / "checkpoints" / "latest.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if latest.is_file() and json.loads(latest.read_text())["step"] >= every:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = json.loads(latest.read_text())["step"]
    assert saved < steps, "the run finished before it could be interrupted"
    _train_here(*_cli_args(scratch, run, steps, "--save-every", str(every), "--resume"))
    resumed, reference = _losses(run), _losses(straight)
    assert len(resumed) == steps  # lines logged after the checkpoint by the killed run were replaced
    assert resumed == pytest.approx(reference, abs=1e-6)


@pytest.mark.parametrize("objective", ["joint", "adapter"])
def test_torchrun_two_gloo_ranks_match_one_process(scratch, tmp_path, objective):
    args = ("--objective", objective, "--micro-batch", "1")
    _train_here(*_cli_args(scratch, tmp_path / "one", 5, *args))
    two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "trimode.cli", "train", *_cli_args(scratch, tmp_path / "two", 5, *args)]
    done = subprocess.run(two, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _losses(tmp_path / "two") == pytest.approx(_losses(tmp_path / "one"), abs=1e-4)
    assert _max_weight_difference(tmp_path / "one" / "final", tmp_path / "two" / "final") < 1e-4


def test_fsdp2_on_gloo_matches_one_process_and_resumes(scratch, tmp_path):
    """FSDP2 (parameters sharded over 2 CPU ranks): same losses and weights; a resume from a sharded
    run's checkpoint reproduces the steps after it."""
    _train_here(*_cli_args(scratch, tmp_path / "one", 5))
    two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "trimode.cli", "train", *_cli_args(scratch, tmp_path / "two", 5, "--fsdp", "--save-every", "3",
                                                    "--keep-checkpoints", "5")]
    done = subprocess.run(two, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    reference = _losses(tmp_path / "one")
    assert _losses(tmp_path / "two") == pytest.approx(reference, abs=1e-4)
    # Forget the end of the run, as if it had been killed after step 3, and resume it.
    ckpts = tmp_path / "two" / "checkpoints"
    (ckpts / "latest.json").write_text(json.dumps({"step": 3, "path": "step-00000003"}))
    shutil.rmtree(ckpts / "step-00000005")
    done = subprocess.run(two + ["--resume"], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _losses(tmp_path / "two") == pytest.approx(reference, abs=1e-4)
    assert _max_weight_difference(tmp_path / "one" / "final", tmp_path / "two" / "final") < 1e-4


def _max_weight_difference(a: Path, b: Path) -> float:
    """Largest difference between two final checkpoints' weights (full or delta), as loaded."""
    sa, sb = load(a, pack=False).model.state_dict(), load(b, pack=False).model.state_dict()
    assert sa.keys() == sb.keys()
    return max((sa[k] - sb[k]).abs().max().item() for k in sa)


def test_adapter_objective_leaves_the_base_bit_identical(scratch, tmp_path):
    """Only the adapter and the mask row learn, and ``final/`` is a delta holding just those."""
    ckpt, _ = scratch
    cfg = _config(scratch, tmp_path / "ad", max_steps=6, objective=ObjectiveConfig(kind="adapter", block_size=4),
                  train_mask_embedding=True)
    records = train(cfg)
    assert records[-1]["draft_accuracy"] >= 0.0 and records[-1]["distill_ce"] > 0
    final = tmp_path / "ad" / "final"
    assert not (final / "model.safetensors").exists()
    meta = json.loads((final / "trimode_delta.json").read_text())
    assert meta["base"]["path"] == str(ckpt.resolve()) and meta["training"]["steps"] == 6
    before = load(ckpt, pack=False).model.state_dict()
    after = load(final, pack=False).model.state_dict()
    mask_id = json.loads((ckpt / "config.json").read_text())["mask_token_id"]
    for name, tensor in before.items():
        if name == "model.embed_tokens.weight":
            changed = (after[name] != tensor).any(dim=1).nonzero().flatten().tolist()
            assert changed == [mask_id]
        else:
            assert torch.equal(after[name], tensor), name
    assert any(".adapters.linear_spec." in k for k in after) and not any(".adapters." in k for k in before)
    adapter = final / "linear_spec_lora"
    assert json.loads((adapter / "adapter_config.json").read_text())["target_modules"] == ["o_proj"]


def test_adapter_training_raises_draft_accuracy(scratch, tmp_path):
    cfg = _config(scratch, tmp_path / "ad", max_steps=40, lr=1e-2, warmup=0, schedule="constant",
                  objective=ObjectiveConfig(kind="adapter", block_size=4))
    records = train(cfg)
    first = sum(r["draft_accuracy"] for r in records[:5]) / 5
    last = sum(r["draft_accuracy"] for r in records[-5:]) / 5
    assert last > first + 0.05, (first, last)


def test_cli_trains_and_the_result_generates(scratch, tmp_path, capsys):
    """In process, through the entry point the console script calls (the torchrun tests and the
    refusal below run it as a real ``python -m trimode.cli`` process, exit status and stderr included)."""
    from trimode.cli import main

    out = tmp_path / "run"
    _train_here(*_cli_args(scratch, out, 3))
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3] and all("loss" in x for x in lines)
    capsys.readouterr()
    assert main(["generate", "--model", str(out / "final"), "--prompt", "12 + 7 =", "--mode", "diffusion",
                 "--max-new-tokens", "8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["mode"] == "diffusion"


def test_bad_inputs_are_refused_clearly(scratch, tmp_path):
    ckpt, _ = scratch
    with pytest.raises(ValueError, match="max_steps"):
        _config(scratch, tmp_path, max_steps=0)
    two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "trimode.cli", "train", *_cli_args(scratch, tmp_path / "y", 2, "--batch-size", "3")]
    done = subprocess.run(two, env=ENV, capture_output=True, text=True)
    assert done.returncode != 0 and "not divisible by the 2 ranks" in done.stderr


def test_fast_drafter_recipe_evaluates_keeps_the_best_and_resumes(scratch, tmp_path):
    """Top-layer adapter scoped to masks, every slot trained, frozen passes kept per sequence:
    held-out evaluations log the training time, the best adapter and snapshots are deltas that load,
    and a resumed run continues the curve and the clock."""
    ckpt, data = scratch
    small = tmp_path / "small.txt"  # a few sequences: later epochs reuse the stored passes
    small.write_text(arithmetic(60, seed=5))
    fast = dict(data=(str(small),), objective=ObjectiveConfig(kind="adapter", block_size=4, draft_loss="all", distill_topk=16),
                adapter_top_layers=1, adapter_scope="masks", teacher_store_mb=64, eval_data=(str(data),),
                eval_every=2, eval_rows=4, snapshot_every=4, save_every=4, lr=1e-2, schedule="constant", warmup=0)
    out = tmp_path / "fast"
    train(_config(scratch, out, max_steps=4, **fast))
    train(_config(scratch, out, max_steps=8, **fast), resume=True)
    evals = [json.loads(x) for x in (out / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [0, 2, 4, 6, 8]
    assert all(b["train_s"] >= a["train_s"] for a, b in zip(evals, evals[1:])) and evals[-1]["train_s"] > evals[0]["train_s"] == 0
    assert len(evals[-1]["slot_accuracy"]) == 3 and "accepted_per_block" in evals[-1]
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["epoch"] >= 1 and records[-1]["draft_weight"] > 0
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == ["step_000000", "step_000004", "step_000008"]
    best = load(out / "best", pack=False).model
    assert best.config.adapter_scope == "masks"
    layers = [i for i, layer in enumerate(best.model.layers) if layer.self_attn.o_proj.adapters]
    assert layers == [len(best.model.layers) - 1]
    assert load(out / "final", pack=False).model.config.adapter_scope == "masks"


def test_several_held_out_sets_are_scored_apart_and_averaged(scratch, tmp_path):
    """Each --eval-data is a set of its own: its accepted length is reported, and the score that
    picks the best adapter is their mean (not a pool dominated by the larger set)."""
    ckpt, data = scratch
    other = tmp_path / "other.txt"
    other.write_text(arithmetic(40, seed=9))
    kw = dict(objective=ObjectiveConfig(kind="adapter", block_size=4, draft_loss="all", distill_topk=16),
              adapter_top_layers=1, adapter_scope="masks", teacher_store_mb=64, eval_every=2, eval_rows=4,
              save_every=4, lr=1e-2, schedule="constant", warmup=0)
    out = tmp_path / "two"
    train(_config(scratch, out, max_steps=2, eval_data=(str(data), str(other)), **kw))
    evals = [json.loads(x) for x in (out / "eval.jsonl").read_text().splitlines()]
    last = evals[-1]
    assert [s["data"] for s in last["sets"]] == [str(data), str(other)]
    mean = sum(s["accepted_per_block"] for s in last["sets"]) / 2
    assert last["accepted_per_block"] == pytest.approx(mean)
    alone = tmp_path / "one"
    train(_config(scratch, alone, max_steps=2, eval_data=(str(other),), **kw))
    one = [json.loads(x) for x in (alone / "eval.jsonl").read_text().splitlines()][-1]
    assert "sets" not in one
    assert one["accepted_per_block"] == pytest.approx(last["sets"][1]["accepted_per_block"])


@pytest.mark.parametrize("lever, refusal, steps", [
    ({"draft_phase": "random"}, "--draft-phase fixed", 30),
    ({"draft_reveal": 0.5}, "--draft-reveal 0", 45),
])
def test_per_step_draft_levers_train_and_refuse_the_teacher_store(scratch, tmp_path, lever, refusal, steps):
    """Random block phase and revealed slots change the draft's lower-layer pass every step, so no
    store of frozen passes can serve them; they train without one."""
    obj = ObjectiveConfig(kind="adapter", block_size=4, draft_loss="all", distill_topk=16, **lever)
    kw = dict(objective=obj, adapter_top_layers=1, adapter_scope="masks", lr=1e-2, schedule="constant", warmup=0)
    with pytest.raises(ValueError, match=refusal):
        train(_config(scratch, tmp_path / "store", max_steps=2, teacher_store_mb=64, **kw))
    records = train(_config(scratch, tmp_path / "lever", max_steps=steps, **kw))
    first = sum(r["draft_accuracy"] for r in records[:5]) / 5
    last = sum(r["draft_accuracy"] for r in records[-5:]) / 5
    assert last > first + 0.05, (first, last)
