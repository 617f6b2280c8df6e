"""Plots of a suite result (matplotlib, Agg backend, PNG): accuracy against tokens per forward
across the diffusion thresholds and block sizes and the speculation blocks (the inference-budget
knob), the accepted-length distribution per mode, and tokens/s against batch size per mode
(transformers' ``generate`` alongside)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plots need matplotlib: pip install -e '.[eval]' (or pass --no-plots)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_suite(result: dict[str, Any], folder: Path, stem: str) -> list[Path]:
    plt = _pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    title = f"{Path(result['model']).stem} · {result['device']} · {result['machine'].get('cpu') or ''}"
    batch1 = [r for r in result["results"] if r["batch_size"] == 1]
    paths = []

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for mode in dict.fromkeys(r["mode"] for r in batch1):
        pts = sorted((r["tokens_per_forward"], r["accuracy"], r["label"]) for r in batch1
                     if r["mode"] == mode and r["accuracy"] is not None)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=mode)
            for x, y, label in pts:
                ax.annotate(label.split("/", 1)[-1] if "/" in label else "", (x, y), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
    _label(ax, "tokens per forward", "accuracy (graded eval prompts)", f"accuracy vs tokens per forward\n{title}")
    paths.append(_save(fig, folder / f"{stem}.accuracy_vs_tpf.png", plt))

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    heads = result["modes"]
    width = 0.8 / max(len(heads), 1)
    for k, (mode, head) in enumerate(heads.items()):
        hist = {int(a): n for a, n in head["accepted_length_histogram"].items()}
        total = sum(hist.values()) or 1
        xs = sorted(hist)
        ax.bar([x + (k - (len(heads) - 1) / 2) * width for x in xs], [hist[x] / total for x in xs], width,
               label=f"{head['label']} (mean {head['mean_accepted_length'] or 0:.2f})")
    _label(ax, "tokens gained per forward (AR: 1; speculation: accepted + bonus; diffusion: committed per step)",
           "share of forwards", f"accepted-length distribution, default settings, batch 1\n{title}", grid=False)
    paths.append(_save(fig, folder / f"{stem}.accepted_lengths.png", plt))

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for mode, head in heads.items():
        pts = sorted((r["batch_size"], r["tokens_per_second"]) for r in result["results"] if r["label"] == head["label"])
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=head["label"])
    hf = sorted((b["batch_size"], b["tokens_per_second"]) for b in result["transformers"])
    if hf:
        ax.plot([p[0] for p in hf], [p[1] for p in hf], "k--s", label="transformers generate")
    _label(ax, "batch size", "generated tokens / s", f"tokens/s vs batch size\n{title}")
    paths.append(_save(fig, folder / f"{stem}.tokens_per_second_vs_batch.png", plt))
    return paths


def _label(ax, xlabel: str, ylabel: str, title: str, grid: bool = True) -> None:
    ax.set_xlabel(xlabel, fontsize=8 if len(xlabel) > 40 else 10)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    if grid:
        ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
