"""``trimode train``: load a checkpoint, decide what learns, build the data, run the trainer, and
write the result as a loadable checkpoint folder ``<output>/final``: full weights, or for the
``adapter`` objective (frozen base) a delta over the base (:mod:`trimode.model.delta`)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..model import load
from ..model.adapters import DRAFT_ADAPTER
from ..model.convert import add_drafting_adapter
from ..model.defaults import model_path
from ..model.delta import is_delta, read_meta, resolve_base, save_delta
from ..model.loading import save_pretrained
from ..model.transformer import Transformer
from .config import TrainConfig
from .distributed import DistEnv
from .trainer import Trainer, read_records


def prepare_model(cfg: TrainConfig, device: str):
    """The model with exactly the parameters the objective trains set to ``requires_grad``.

    ``joint``/``ar``: every base weight (an existing drafting adapter stays frozen: it was fitted
    to the old base). ``adapter``: only the drafting adapter's LoRA factors (added, PEFT-initialised,
    when the checkpoint has none), plus the mask token's embedding row when the mask token is
    assigned here (a plain AR model has never seen it).
    """
    path = model_path(cfg.model)
    kind = cfg.objective.kind
    assigned = cfg.mask_token is not None
    fields: dict = {}
    if assigned and cfg.objective.block_size is not None:
        fields["block_size"] = cfg.objective.block_size
    if assigned and kind == "adapter":
        # A plain AR base never learned to fill masks: its diffusion mode denoises with the adapter.
        fields["denoise_adapter"] = True
    loaded = load(path, dtype=getattr(torch, cfg.dtype), device=device, adapter=True, pack=False,
                  mask_token=cfg.mask_token, config=fields)
    model: Transformer = loaded.model
    if model.config.mask_token_id is None and kind != "ar":
        raise ValueError(
            f"{path} has no mask_token_id; the {kind!r} objective needs one: pass --mask-token with an unused "
            "token of the vocabulary (text or id)"
        )
    model.requires_grad_(False)
    if kind == "adapter":
        if DRAFT_ADAPTER not in model.adapter_names:
            n = model.config.num_hidden_layers
            top = min(cfg.adapter_top_layers or n, n)
            add_drafting_adapter(model, rank=cfg.adapter_rank, alpha=cfg.adapter_alpha, targets=cfg.adapter_targets,
                                 seed=cfg.seed, layers=range(n - top, n), scope=cfg.adapter_scope)
        for name, p in model.named_parameters():
            if f".adapters.{DRAFT_ADAPTER}." in name:
                p.requires_grad_(True)
        train_mask = assigned if cfg.train_mask_embedding is None else cfg.train_mask_embedding
        if train_mask:
            _train_rows(model.model.embed_tokens.weight, [model.config.mask_token_id])
    else:
        for name, p in model.named_parameters():
            if ".adapters." not in name:
                p.requires_grad_(True)
    return model, loaded.tokenizer


def _train_rows(weight: torch.nn.Parameter, rows: list[int]) -> None:
    """Let only some rows of an embedding learn: their gradient passes, the others' is zeroed.
    (The optimizer gives this parameter no weight decay, so the frozen rows stay bit-identical.)"""
    keep = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
    keep[rows] = 1
    weight.requires_grad_(True)
    weight._trimode_row_mask = keep
    weight.register_hook(lambda g: g * keep)


def _base_of(cfg: TrainConfig) -> Path:
    """The unchanged checkpoint under an adapter run (through a delta to its own base)."""
    path = model_path(cfg.model)
    return resolve_base(path, read_meta(path)) if is_delta(path) else path


def _training_record(cfg: TrainConfig, records: list[dict]) -> dict:
    last = records[-1] if records else {}
    return {
        "objective": cfg.objective.kind,
        "steps": cfg.max_steps,
        "seq_len": cfg.seq_len,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "adapter_rank": cfg.adapter_rank,
        "adapter_targets": list(cfg.adapter_targets),
        "data": [str(d) for d in cfg.data],
        "final_loss": last.get("loss"),
        "tokens_this_run": sum(r.get("tokens", 0) for r in records),
        "train_seconds_this_run": round(sum(r.get("step_s", 0.0) for r in records), 1),
    }


class DraftEvaluator:
    """Held-out draft metrics of the adapter objective (teacher forced: per-slot accuracy and the
    accepted draft length per block, which on the model's own greedy text is what linear
    self-speculation accepts), and the best adapter so far written as a delta to ``best``.

    Each ``eval_data`` path is a held-out set of its own (its first ``eval_rows`` sequences); the
    score that picks the best adapter is the mean of the sets' accepted lengths, so a small set of
    one kind of text (prose, say) weighs as much as a large one of another. With one set the
    score is that set's."""

    def __init__(self, cfg: TrainConfig, model: Transformer, tokenizer, best: Path, base: Path, device: str) -> None:
        from .data import DataConfig, build_dataset

        self.sets = []  # (name, x0, loss_mask)
        for path in cfg.eval_data:
            dataset = build_dataset(DataConfig(paths=(path,), seq_len=cfg.seq_len, seed=cfg.seed), tokenizer)
            rows = [dataset[i] for i in range(min(cfg.eval_rows, len(dataset)))]
            self.sets.append((str(path), torch.stack([r["input_ids"] for r in rows]).to(device),
                              torch.stack([r["loss_mask"] for r in rows]).to(device)))
        self.cfg, self.model, self.best, self.base, self.tokenizer = cfg, model, best, base, tokenizer
        self.teachers: dict[tuple[int, int], object] = {}  # held-out sets are fixed: frozen passes made once
        self.best_score = float("-inf")

    def restore(self, eval_path: Path) -> None:
        records, _ = read_records(eval_path)  # a killed run's partial last line is dropped on resume
        self.best_score = max((r.get("accepted_per_block", float("-inf")) for r in records), default=float("-inf"))

    def _set_logs(self, index: int, x0_all: torch.Tensor, mask_all: torch.Tensor) -> dict[str, float]:
        from .draft_objective import teacher_for
        from .objective import adapter_terms

        ocfg, chunk = self.cfg.objective, 8
        logs: dict[str, float] = {}
        for n, i in enumerate(range(0, len(x0_all), chunk)):
            x0, lm = x0_all[i : i + chunk], mask_all[i : i + chunk]
            teacher = None
            if ocfg.distill_topk > 0:
                if (index, n) not in self.teachers:
                    self.teachers[index, n] = teacher_for(self.model, x0, lm, ocfg.draft_settings())
                teacher = self.teachers[index, n]
            for k, v in adapter_terms(self.model, x0, lm, ocfg, teacher).logs.items():
                logs[k] = logs.get(k, 0.0) + v
        return logs

    def __call__(self, step: int) -> dict:
        from .trainer import _readable

        pooled: dict[str, float] = {}
        per_set = []
        for index, (name, x0, lm) in enumerate(self.sets):
            logs = self._set_logs(index, x0, lm)
            for k, v in logs.items():
                pooled[k] = pooled.get(k, 0.0) + v
            per_set.append({"data": name, **_readable(logs)})
        result = _readable(pooled)  # slot accuracies pooled over every held-out sequence
        result["accepted_per_block"] = sum(s.get("accepted_per_block", 0.0) for s in per_set) / max(len(per_set), 1)
        if len(per_set) > 1:
            result["sets"] = [{k: s[k] for k in ("data", "accepted_per_block", "slot_accuracy") if k in s}
                              for s in per_set]
        score = result["accepted_per_block"]
        record = {**_training_record(self.cfg, []), "step": step, "eval_accepted_per_block": score,
                  "eval_slot_accuracy": result.get("slot_accuracy")}
        for key in ("final_loss", "tokens_this_run", "train_seconds_this_run"):
            record.pop(key)
        if score > self.best_score:
            self.best_score = score
            save_delta(self.model, self.best, self.base, [self.model.config.mask_token_id], record, self.tokenizer)
            result["best"] = True
        every = self.cfg.snapshot_every
        if every and step % every == 0:
            save_delta(self.model, self.best.parent / "snapshots" / f"step_{step:06d}", self.base,
                       [self.model.config.mask_token_id], record, self.tokenizer)
        return result


def build_batches(cfg: TrainConfig, tokenizer, env: DistEnv):
    from .data import Batches, DataConfig, build_dataset

    if tokenizer is None:
        raise ValueError(f"{cfg.model} has no tokenizer; training data must be tokenized with the model's tokenizer")
    if cfg.batch_size % env.world:
        raise ValueError(f"--batch-size {cfg.batch_size} is not divisible by the {env.world} ranks")
    dataset = build_dataset(DataConfig(paths=tuple(cfg.data), seq_len=cfg.seq_len, seed=cfg.seed), tokenizer)
    return Batches(dataset, cfg.batch_size, cfg.seed, rank=env.rank, world_size=env.world), dataset


def train(cfg: TrainConfig, resume: bool = False, override: bool = False) -> list[dict]:
    """Train as ``cfg`` says; ``resume``: from the newest good checkpoint in ``cfg.output`` (an error
    when there is none), refusing a changed configuration unless ``override``."""
    env = DistEnv.from_env(cfg.device)
    try:
        torch.manual_seed(cfg.seed)
        model, tokenizer = prepare_model(cfg, env.device)
        batches, dataset = build_batches(cfg, tokenizer, env)
        if env.main and cfg.progress:
            print(f"data: {dataset.summary}", flush=True)
        trainer = Trainer(cfg, model, batches, env, tokenizer)
        evaluate = None
        if cfg.eval_every and cfg.objective.kind == "adapter":
            evaluate = DraftEvaluator(cfg, model, tokenizer, Path(cfg.output) / "best", _base_of(cfg), env.device)
            if resume:
                evaluate.restore(trainer.eval_path)
        records = trainer.run(resume=resume, evaluate=evaluate, override=override)
        final = Path(cfg.output) / "final"
        if cfg.fsdp and env.world > 1:
            state = trainer.trainable_state()  # a collective: every rank takes part
            if env.main:
                model, _ = prepare_model(cfg, "cpu")
                model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()}, strict=False)
        if env.main and cfg.objective.kind == "adapter":
            save_delta(model.eval(), final, _base_of(cfg), [model.config.mask_token_id], _training_record(cfg, records),
                       tokenizer)
        elif env.main:
            save_pretrained(model.eval(), final, tokenizer=tokenizer)
        env.barrier()
        return records
    finally:
        env.close()
