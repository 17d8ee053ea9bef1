"""RM training cost per sample of the paper's RM path in miniature: frozen vs LoRA vs full fine-tuning.

    python benchmarks/rm_backbone.py [--backbone smollm2-135m-instruct --samples 64 --batch-size 16]

The global stage's model (`training.global_worker.build_model`: the backbone + the Global-Prob head, features of
prompt ⊕ candidate, last-token pooling) on real commit-subject pairs from ../shared (the profile items' change
descriptions and their real subjects). Timed in this process, one thread pool, after an untimed warm-up step:

  frozen: what the frozen default pays per sample — one no-grad backbone pass (the feature cache; paid once)
          plus one head step per epoch (reported separately: `frozen_head_step`);
  lora:   forward + backward + AdamW step through the backbone with LoRA adapters (`--lora-r`, q/v projections);
  full:   the same with every backbone weight trainable.

The last line is one JSON object: samples/s per mode and each mode's ratio to the frozen feature pass. The paper
reports 19 ms per RM training sample for its 1.5B backbone on GPUs (cited, not measured here).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMIT_DATA = REPO.parent / "shared" / "data" / "commit_subject_pytest"
for key, value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(key, value)


def pairs(n: int) -> tuple[list[str], list[str]]:
    """(prompt, candidate) pairs: each profile item's change description and its real commit subject."""
    qs, cs = [], []
    for q in json.loads((COMMIT_DATA / "questions.json").read_text()):
        prof = q["profile"] if isinstance(q["profile"], list) else ast.literal_eval(q["profile"])
        for item in prof:
            qs.append("Generate a commit subject line for the following change:\n" + item["text"])
            cs.append(item["title"])
            if len(qs) == n:
                return qs, cs
    return qs, cs


def _steps(mode: str, args: argparse.Namespace, queries: list[str], cands: list[str], dim: int) -> dict:
    """Time `args.samples` samples of one mode (after one untimed warm-up batch)."""
    import torch

    from ttp_ray.reward.config import FeatureConfig, HeadConfig
    from ttp_ray.reward.features import STATIC_SCALARS
    from ttp_ray.reward.heads import raw_to_mu_var
    from ttp_ray.reward.losses import gaussian_nll
    from ttp_ray.training.config import GlobalStageConfig
    from ttp_ray.training.global_worker import GlobalLoopConfig, build_model, ds_config, param_groups

    dev, bs = torch.device(args.device), args.batch_size
    fcfg = FeatureConfig(backbone=args.backbone, mode="pair", blocks=["pair", "length"], dtype=args.dtype,
                         max_query_tokens=args.max_query_tokens, max_cand_tokens=24)
    gcfg = GlobalStageConfig(backbone_mode=mode, lora_r=args.lora_r, lora_alpha=2 * args.lora_r, batch_size=bs,
                             lora_target_modules=["q_proj", "v_proj"] if mode == "lora" else None)
    hc = {"global-prob": HeadConfig()}
    # build_model loads a backbone only when it trains: the frozen pass builds the LoRA model and freezes it
    loop = GlobalLoopConfig(head_cfgs=hc, global_cfg=gcfg if mode != "frozen" else gcfg.model_copy(
        update={"backbone_mode": "lora"}), feature_cfg=fcfg, in_dim=dim, x_mean=[0.0] * dim, x_std=[1.0] * dim,
        g_mean=0.3, g_var=0.04, golden="rouge1", seed=0, has_val=False, use_gpu=dev.type == "cuda")
    model = build_model(loop).to(dev)
    opt = torch.optim.AdamW([g for g in param_groups(model, gcfg) if g["params"]], lr=1e-4)
    engine = None
    if mode == "frozen":
        model.backbone.freeze()
    elif args.deepspeed:
        import deepspeed

        engine, opt, _, _ = deepspeed.initialize(model=model, optimizer=opt, config=ds_config(gcfg, 1))
    g = torch.rand(bs, device=dev)

    def step(i: int) -> None:
        q, c = queries[i : i + bs], cands[i : i + bs]
        batch = {"text": c, "query_text": q, "cu": torch.zeros(len(c), model.backbone.dim, device=dev),
                 "scalars": torch.zeros(len(c), len(STATIC_SCALARS), device=dev)}
        if mode == "frozen":
            with torch.inference_mode():
                model.features(batch)
        else:
            o = raw_to_mu_var((engine or model)(batch)["global-prob"], hc["global-prob"])
            loss = gaussian_nll(o.mu, o.var, g[: len(o.mu)]).mean()
            if engine is not None:
                engine.backward(loss)
                engine.step()
            else:
                opt.zero_grad()
                loss.backward()
                opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    step(0)  # warm-up (allocations, first-call overheads)
    t0 = time.perf_counter()
    for i in range(bs, bs + args.samples, bs):
        step(i)
    dt = time.perf_counter() - t0
    out = {"samples_per_s": round(args.samples / dt, 2), "ms_per_sample": round(1000 * dt / args.samples, 1),
           "trainable_params": int(sum(p.numel() for p in model.parameters() if p.requires_grad))}
    if mode == "frozen":  # the frozen default's other cost: one head step per epoch on cached features
        head = model.heads["global-prob"]
        head.requires_grad_(True)
        x, hopt = torch.randn(4096, dim, device=dev), torch.optim.AdamW(head.parameters(), lr=1e-3)
        t1 = time.perf_counter()
        for _ in range(10):
            o = raw_to_mu_var(head.raw(x), hc["global-prob"])
            loss = gaussian_nll(o.mu, o.var, torch.rand(4096, device=dev)).mean()
            hopt.zero_grad()
            loss.backward()
            hopt.step()
        out["head_step_samples_per_s"] = round(40960 / (time.perf_counter() - t1))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="smollm2-135m-instruct")
    p.add_argument("--samples", type=int, default=64, help="timed samples per mode")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-query-tokens", type=int, default=128)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="auto", help="backbone weights: auto (fp32 on CPU, bf16 on CUDA), float32, "
                   "bfloat16 (LoRA's base; full fine-tuning keeps fp32)")
    p.add_argument("--deepspeed", action="store_true", help="step through one DeepSpeed ZeRO-2 engine (world 1)")
    args = p.parse_args()

    import torch
    from transformers import AutoConfig

    from ttp_ray.models import resolve_model

    torch.set_num_threads(args.threads)
    if args.deepspeed:  # a one-process world for deepspeed.initialize
        import deepspeed

        for k, v in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                     "MASTER_PORT": "29517"}.items():
            os.environ.setdefault(k, v)
        deepspeed.init_distributed(dist_backend="nccl" if args.device == "cuda" else "gloo")
    queries, cands = pairs(args.samples + args.batch_size)
    dim = AutoConfig.from_pretrained(resolve_model(args.backbone)).hidden_size + 1  # pair ⊕ length
    out: dict[str, object] = {"backbone": args.backbone, "samples": args.samples, "batch_size": args.batch_size,
                              "max_query_tokens": args.max_query_tokens, "threads": args.threads,
                              "device": args.device, "dtype": args.dtype, "deepspeed": args.deepspeed}
    for mode in ("frozen", "lora", "full"):
        for k, v in _steps(mode, args, queries, cands, dim).items():
            out[f"{mode}_{k}"] = v
    out["lora_vs_frozen_feature_pass"] = round(out["lora_samples_per_s"] / out["frozen_samples_per_s"], 3)
    out["full_vs_frozen_feature_pass"] = round(out["full_samples_per_s"] / out["frozen_samples_per_s"], 3)
    out["paper_rm_ms_per_sample_cited"] = 19
    print(json.dumps(out))


if __name__ == "__main__":
    main()
