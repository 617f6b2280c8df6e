"""Resuming a damaged run: every checkpoint fault gives a one-line message (never a traceback) and
falls back to the newest good checkpoint; a changed configuration is refused unless --override;
kill -9 at random points of a run, then resume, ends with the weights of an unbroken run."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_trainer import ENV, arithmetic

from trimode.train.checkpoint import read_checkpoint
from trimode.train.scratch import make_scratch_checkpoint


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("scratch")
    data = root / "data.txt"
    data.write_text(arithmetic(600))
    return make_scratch_checkpoint(root / "model", [arithmetic(300, seed=1)], vocab_size=300, block_size=4), data


def _args(scratch, output: Path, steps: int, *extra: str) -> list[str]:
    ckpt, data = scratch
    return ["train", "--model", str(ckpt), "--data", str(data), "--output", str(output), "--max-steps", str(steps),
            "--seq-len", "32", "--batch-size", "4", "--lr", "3e-3", "--warmup", "2", "--schedule", "cosine",
            "--block-size", "4", "--save-every", "2", "--no-progress", *extra]


def _steps(output: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (output / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def run4(scratch, tmp_path_factory) -> Path:
    """A finished 4-step run with checkpoints at steps 2 and 4; each case damages a copy of it."""
    from trimode.cli import main

    out = tmp_path_factory.mktemp("run4") / "run"
    assert main(_args(scratch, out, 4)) == 0
    return out


def _ckpt(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step-{step:08d}"


def _flip(path: Path) -> None:
    """Damage a file in place without changing its size (what a bad disk or a stray write does)."""
    raw = bytearray(path.read_bytes())
    for i in range(len(raw) // 2, len(raw) // 2 + 16):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _unverified(run: Path) -> None:
    """Rewrite step 4's meta.json as checkpoints were written before checksums were recorded."""
    meta_path = _ckpt(run, 4) / "meta.json"
    meta = json.loads(meta_path.read_text())
    for key in ("files", "meta_sha256"):
        meta.pop(key, None)
    meta_path.write_text(json.dumps(meta))


def _stale(run: Path) -> None:
    tmp = run / "checkpoints" / ".step-00000006.tmp-999999"
    tmp.mkdir()
    (tmp / "model.safetensors").write_bytes(b"\0" * 4096)
    (run / "checkpoints" / "latest.json.tmp-999999").write_text("{")


def _metrics(run: Path) -> None:
    """A killed run's log: a duplicated step, steps past the checkpoint, and a partial last line."""
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines + [lines[2], '{"step": 5, "loss": 1.0}', '{"step": 6, "lo']))


# case -> (damage, extra resume arguments, exit status, stderr must contain, step resumed from)
FAULTS: dict[str, tuple[Callable[[Path], None], tuple[str, ...], int, tuple[str, ...], int | None]] = {
    "same-size corruption": (lambda r: _flip(_ckpt(r, 4) / "model.safetensors"), (), 0,
                             ("step-00000004", "model.safetensors", "sha256", "falling back"), 2),
    "truncated optimizer": (lambda r: _truncate(_ckpt(r, 4) / "optimizer.safetensors"), (), 0,
                            ("step-00000004", "optimizer.safetensors", "bytes, expected"), 2),
    "truncated meta.json": (lambda r: _truncate(_ckpt(r, 4) / "meta.json"), (), 0,
                            ("step-00000004", "meta.json is not valid JSON"), 2),
    "edited meta.json": (lambda r: (_ckpt(r, 4) / "meta.json").write_text(
                             (_ckpt(r, 4) / "meta.json").read_text().replace('"position": 4', '"position": 3')), (), 0,
                         ("step-00000004", "meta.json fails its sha256 check"), 2),
    "empty latest.json": (lambda r: (r / "checkpoints" / "latest.json").write_text(""), (), 0,
                          ("latest.json is empty",), 4),
    "missing latest.json": (lambda r: (r / "checkpoints" / "latest.json").unlink(), (), 0, (), 4),
    "killed run's metrics": (_metrics, (), 0, ("dropped 1 unreadable line of", "metrics.jsonl"), 4),
    "stale temporaries": (_stale, (), 0, ("removed stale", ".step-00000006.tmp-999999"), 4),
    "checkpoint without checksums": (_unverified, (), 0, ("step-00000004 has no checksums", "not verified"), 4),
    "every checkpoint damaged": (lambda r: [_flip(_ckpt(r, s) / "model.safetensors") for s in (2, 4)], (), 2,
                                 ("trimode: error: cannot resume", "step-00000004", "step-00000002", "sha256"), None),
    "nothing to resume": (lambda r: shutil.rmtree(r / "checkpoints"), (), 2,
                          ("trimode: error: --resume: no checkpoint in", "without --resume"), None),
    "changed lr": (lambda r: None, ("--lr", "1e-3"), 2, ("configuration changed", "lr: 0.003 -> 0.001", "--override"), None),
    "changed objective": (lambda r: None, ("--objective", "ar"), 2, ("objective.kind: 'joint' -> 'ar'", "--override"), None),
    "changed lr, overridden": (lambda r: None, ("--lr", "1e-3", "--override"), 0, ("--override", "lr: 0.003 -> 0.001"), 4),
    "longer run, other cadence": (lambda r: None, ("--max-steps", "8", "--save-every", "3", "--keep-checkpoints", "3"), 0,
                                  (), 4),
}


@pytest.mark.parametrize("case", list(FAULTS))
def test_a_damaged_run_resumes_from_its_newest_good_checkpoint_or_says_why(case, scratch, run4, tmp_path, capsys):
    from trimode.cli import main

    damage, extra, status, messages, resumed_from = FAULTS[case]
    run = tmp_path / "run"
    shutil.copytree(run4, run)
    damage(run)
    before = (run / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert main(_args(scratch, run, 6, "--resume", *extra)) == status  # an exception would fail the test here
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    for message in messages:
        assert message in err, (message, err)
    if status:
        assert len(err.strip().splitlines()) == 1, err  # the error is one line
        assert (run / "metrics.jsonl").read_text() == before  # a refused resume changes nothing
        return
    assert re.search(rf"resumed from step {resumed_from}\b", out), out
    last = 8 if "--max-steps" in extra else 6
    assert _steps(run) == list(range(1, last + 1))
    assert not list((run / "checkpoints").glob("*.tmp-*"))
    for folder in (run / "checkpoints").glob("step-*"):
        left = read_checkpoint(folder)  # damaged folders were replaced by good ones
        assert left.verified or left.step == resumed_from, folder


def _trainable(run: Path) -> dict[str, torch.Tensor]:
    folder = run / "checkpoints" / "step-00000100"
    return {**load_file(str(folder / "model.safetensors")), **load_file(str(folder / "optimizer.safetensors"))}


def test_kill_9_at_random_points_then_resume_gives_the_unbroken_run_bit_for_bit(scratch, tmp_path):
    """Three kills of a 100-step run (seeded): two at random moments of random steps, one while a
    checkpoint is being written (the worst moment). Each restart resumes as the recipe does (when a
    step-* folder exists); the final weights and optimizer state equal an unbroken run's exactly."""
    cmd = [sys.executable, "-m", "trimode.cli"]
    reference = subprocess.Popen(cmd + _args(scratch, tmp_path / "straight", 100, "--save-every", "7"), env=ENV,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run, rng = tmp_path / "killed", random.Random(7)
    ckpts = run / "checkpoints"

    def logged() -> int:
        path = run / "metrics.jsonl"
        return path.read_text().count("\n") if path.is_file() else 0

    for n, target in enumerate(sorted(rng.sample(range(3, 90), 3))):
        resume = ["--resume"] if list(ckpts.glob("step-*")) else []
        proc = subprocess.Popen(cmd + _args(scratch, run, 100, "--save-every", "7", *resume), env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while proc.poll() is None and time.time() < deadline:
            if n == 1 and ckpts.is_dir() and any(".tmp-" in p.name for p in ckpts.iterdir()):
                break  # mid-write of a checkpoint
            if n != 1 and logged() >= target:
                time.sleep(rng.uniform(0.0, 0.05))
                break
            time.sleep(0.0005 if n == 1 else 0.005)
        proc.kill()
        assert proc.wait() != 0, "the run finished before it could be killed"
    done = subprocess.run(cmd + _args(scratch, run, 100, "--save-every", "7", "--resume"), env=ENV, check=False,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert reference.wait() == 0
    assert _steps(run) == list(range(1, 101))
    assert not list(ckpts.glob("*.tmp-*"))
    straight, resumed = _trainable(tmp_path / "straight"), _trainable(run)
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_more_data_on_resume_needs_override_and_then_opens_a_new_epoch(scratch, run4, tmp_path, capsys):
    from trimode.cli import main

    run, more = tmp_path / "run", tmp_path / "more.txt"
    shutil.copytree(run4, run)
    more.write_text(scratch[1].read_text() + arithmetic(300, seed=5))  # the old data and some new
    capsys.readouterr()
    assert main(_args(scratch, run, 6, "--resume", "--data", str(more))) == 2
    err = capsys.readouterr().err
    assert "cannot resume the data order" in err and "--override" in err and "Traceback" not in err
    assert main(_args(scratch, run, 6, "--resume", "--data", str(more), "--override")) == 0
    out, err = capsys.readouterr()
    assert "resumed from step 4" in out and "the data changed since step-00000004" in err and "new epoch" in err
    assert _steps(run) == list(range(1, 7))
