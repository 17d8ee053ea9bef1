"""Benchmark: per-user reward models for 10,000 users at once, and what scoring costs next to generation.

1. Bank vs naive (cached features, no Ray): `fit_user_stage` fits one UserBank for all users (mini-batches
   mixing users, one optimiser step updates all of them) against two naive loops that fit one model per user
   with the same objective, epochs cap and early stopping: the textbook loop (a fresh model + torch Adam per
   user, mini-batches of 16; `naive_seconds_extrapolated`, `speedup`) and a strong one (one vectorised
   full-batch `fit_user_stage` call per user; `speedup_vs_vectorized_naive`). Naive loops are timed on a random
   sample of users and extrapolated linearly (each user is an independent fit). Each phase runs in its own
   process so peak RSS is per approach.
2. Scoring vs generation: candidates/s of the bundled MiniLM `RewardScorer` (bi-encoder features, query and user
   parts cached, batched) next to the bundled SmolLM2 policy with transformers `generate` (batched prompts,
   `num_return_sequences`, ~20 new tokens), measured in the same run. `scoring_cost_fraction` = scoring time per
   candidate / generation time per candidate.

Untimed warm-ups precede every timed phase. The last printed line is one JSON object.

    python benchmarks/user_rm_training.py                      # 10,000 users x 50 samples
    python benchmarks/user_rm_training.py --users 1000 --quick # smoke run
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _data(args: argparse.Namespace):
    from ttp_ray.training.synthetic_bank import synthetic_bank_data

    # n_queries x n_cands = samples per user; no held-out queries here (validation is carved out by the stage)
    return synthetic_bank_data(n_users=args.users, n_queries=args.samples // args.cands, n_cands=args.cands,
                               dim=args.dim, n_eval_queries=0, collapse_frac=0.25, seed=0)


def _configs(args: argparse.Namespace):
    from ttp_ray.reward.config import UserStageConfig
    from ttp_ray.training.config import GlobalStageConfig

    ucfg = UserStageConfig(epochs=args.epochs, patience=args.patience, batch_size=args.batch_size)
    return ucfg, GlobalStageConfig(epochs=5, batch_size=4096, lr=3e-3)


def _global_head(data, ucfg, gcfg):
    from ttp_ray.training.global_fit import fit_global_head
    from ttp_ray.training.user_fit import split_by_query

    val = split_by_query(data.user_idx, data.query_ids, ucfg.val_fraction, ucfg.seed)
    return fit_global_head(data.features, data.golden, val, ucfg.head_config(), gcfg).head


def _bank_phase(args: argparse.Namespace, out: mp.Queue) -> None:
    import torch

    from ttp_ray.training.user_fit import fit_user_stage

    torch.set_num_threads(args.threads)
    data = _data(args)
    ucfg, gcfg = _configs(args)
    head = _global_head(data, ucfg, gcfg)
    # warm-up (untimed): a few epochs on a slice of users
    warm = data.user_idx < 50
    fit_user_stage(data.features[warm], data.golden[warm], data.user_idx[warm], data.query_ids[warm], head,
                   ucfg.model_copy(update={"epochs": 3}))
    t0 = time.perf_counter()
    res = fit_user_stage(data.features, data.golden, data.user_idx, data.query_ids, head, ucfg, progress=True)
    secs = time.perf_counter() - t0
    out.put({"bank_seconds": secs, "bank_epochs": len(res.history) - 1, "bank_peak_rss_mb": _peak_rss_mb(),
             "bank_users_improved": int((res.best_epoch > 0).sum()), "rows": int(len(data.golden))})


def _naive_setup(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """What both naive loops share: data, settings, the frozen global head and the same sample of users."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    data = _data(args)
    ucfg, gcfg = _configs(args)
    head = _global_head(data, ucfg, gcfg)
    sample = np.random.default_rng(1).choice(args.users, size=min(args.naive_sample, args.users), replace=False)
    return data, ucfg, head, sample


def _naive_phase(args: argparse.Namespace, out: mp.Queue) -> None:
    import numpy as np

    from ttp_ray.training.user_fit import fit_user_stage

    data, ucfg, head, sample = _naive_setup(args)
    order = np.argsort(data.user_idx, kind="stable")
    starts = np.searchsorted(data.user_idx[order], np.arange(args.users + 1))

    def fit_one(u: int) -> None:
        rows = order[starts[u] : starts[u + 1]]
        fit_user_stage(data.features[rows], data.golden[rows], np.zeros(len(rows), dtype=np.int64),
                       data.query_ids[rows], head, ucfg, n_users=1)

    fit_one(int(sample[0]))  # warm-up (untimed)
    t0 = time.perf_counter()
    for u in sample:
        fit_one(int(u))
    per_user = (time.perf_counter() - t0) / len(sample)
    out.put({"naive_seconds_per_user": per_user, "naive_users_timed": int(len(sample)),
             "naive_peak_rss_mb": _peak_rss_mb()})


def _textbook_phase(args: argparse.Namespace, out: mp.Queue) -> None:
    """The loop most people would write: per user a fresh model and optimiser, mini-batches, early stopping."""
    import math

    import numpy as np
    import torch

    from ttp_ray.reward.bank import PersonalizedHead
    from ttp_ray.reward.losses import gaussian_nll, head_loss
    from ttp_ray.training.user_fit import split_by_query

    data, ucfg, head, sample = _naive_setup(args)

    def fit_one(u: int) -> None:
        m = data.user_idx == u
        x, g = torch.tensor(data.features[m]), torch.tensor(data.golden[m])
        val = torch.tensor(split_by_query(np.zeros(int(m.sum())), data.query_ids[m], ucfg.val_fraction))
        model = PersonalizedHead(head, 1, ucfg.user_input)
        opt = torch.optim.Adam(model.bank.parameters(), lr=ucfg.lr)
        tr, va = torch.nonzero(~val).squeeze(1), torch.nonzero(val).squeeze(1)
        zeros = torch.zeros(len(x), dtype=torch.long)
        best, bad = math.inf, 0
        for _ in range(ucfg.epochs):
            for b in tr[torch.randperm(len(tr))].split(args.naive_batch):
                out = model(x[b], zeros[b])
                prior = ucfg.prior_strength / len(tr) * model.bank.weight.pow(2).sum()
                loss = head_loss(out.mu, out.var, g[b]).mean() + prior
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                o = model(x[va], zeros[va])
                v = float(gaussian_nll(o.mu, o.var, g[va]).mean())
            best, bad = (v, 0) if v < best else (best, bad + 1)
            if bad >= ucfg.patience:
                break

    fit_one(int(sample[0]))  # warm-up (untimed)
    t0 = time.perf_counter()
    for u in sample:
        fit_one(int(u))
    out.put({"textbook_seconds_per_user": (time.perf_counter() - t0) / len(sample)})


def _run_in_child(target, args: argparse.Namespace) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(args, q))
    p.start()
    res = q.get()
    p.join()
    if p.exitcode != 0:
        raise RuntimeError(f"{target.__name__} exited with {p.exitcode}")
    return res


def _scoring_vs_generation(args: argparse.Namespace) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ttp_ray.data.config import DatasetConfig, SyntheticConfig
    from ttp_ray.data.loaders import load_dataset
    from ttp_ray.data.simulated import simulate_pools
    from ttp_ray.models import POLICY_DEFAULT, resolve_model
    from ttp_ray.reward.scorer import RewardScorer
    from ttp_ray.training import TrainingConfig, train_reward_models_local

    torch.set_num_threads(args.threads)
    n = args.n_candidates
    with tempfile.TemporaryDirectory() as tmp:
        ds = load_dataset(DatasetConfig(synthetic=SyntheticConfig(n_users=4, profile_size=6, queries_per_user=4)),
                          Path(tmp) / "data")
        cfg = TrainingConfig.model_validate({"variants": ["global-prob", "user-prob"],
                                             "global_stage": {"epochs": 5}, "user_stage": {"epochs": 20}})
        train_reward_models_local(simulate_pools(ds, mode="rm_train", n_candidates=4), ds.profile,
                                  Path(tmp) / "rm", cfg)
        scorer = RewardScorer.from_checkpoint(Path(tmp) / "rm", "user-prob")
        pools = simulate_pools(ds, mode="eval", n_candidates=n)
    queries = pools["query_text"].to_pylist()[::n]
    users = pools["user_id"].to_pylist()[::n]
    texts = pools["text"].to_pylist()
    requests = [(users[i], queries[i], texts[i * n : (i + 1) * n]) for i in range(len(queries))]
    # Serving pattern: one request = one query with its N candidates; the query embedding is computed once
    # per query (then cached), the user part comes from the checkpoint. Warm-up pass, then timed passes.
    scorer.score_batch(requests[:2])
    scorer.featurizer._query_cache.clear()
    t0 = time.perf_counter()
    scored = 0
    for r in requests:
        scored += len(scorer.score(*r).mu)
    score_s = time.perf_counter() - t0
    scoring_rate = scored / score_s

    path = resolve_model(POLICY_DEFAULT)
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    prompts = [f"Write a short headline for this article.\nArticle: {q[:300]}\nHeadline:" for q in queries[:2]]
    enc = tok(prompts, return_tensors="pt", padding=True)

    def generate() -> int:
        with torch.inference_mode():
            out = model.generate(**enc, do_sample=True, temperature=0.7, top_p=0.95, max_new_tokens=20,
                                 min_new_tokens=20, num_return_sequences=n, pad_token_id=tok.eos_token_id)
        return out.shape[0]

    generate()  # warm-up
    t0 = time.perf_counter()
    generated = sum(generate() for _ in range(args.gen_rounds))
    gen_s = time.perf_counter() - t0
    gen_rate = generated / gen_s
    return {"scoring_cands_per_s": scoring_rate, "scoring_ms_per_cand": 1000 / scoring_rate,
            "generation_cands_per_s": gen_rate, "generation_ms_per_cand": 1000 / gen_rate,
            "scoring_cost_fraction": gen_rate / scoring_rate, "scored_candidates": scored,
            "generated_candidates": generated}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--samples", type=int, default=50, help="samples (candidates) per user")
    ap.add_argument("--cands", type=int, default=5, help="candidates per pseudo-query")
    ap.add_argument("--dim", type=int, default=64, help="width of the cached feature vectors")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=65536)
    ap.add_argument("--naive-sample", type=int, default=30, help="users timed in the naive loops")
    ap.add_argument("--naive-batch", type=int, default=16, help="mini-batch size of the textbook per-user loop")
    ap.add_argument("--n-candidates", type=int, default=16, help="N per query for scoring / generation")
    ap.add_argument("--gen-rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="smaller naive sample and generation")
    ap.add_argument("--skip-scoring", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.naive_sample, args.gen_rounds = 5, 1
    bank = _run_in_child(_bank_phase, args)
    print(f"bank: {args.users} users x {args.samples} samples in {bank['bank_seconds']:.1f}s "
          f"({bank['bank_epochs']} epochs, peak RSS {bank['bank_peak_rss_mb']:.0f} MB)", flush=True)
    naive = _run_in_child(_textbook_phase, args)
    naive_total = naive["textbook_seconds_per_user"] * args.users
    print(f"naive (per-user model + Adam, batches of {args.naive_batch}): "
          f"{naive['textbook_seconds_per_user'] * 1000:.1f} ms/user on {args.naive_sample} sampled users -> "
          f"{naive_total:.0f}s extrapolated to {args.users} users", flush=True)
    vec = _run_in_child(_naive_phase, args)
    vec_total = vec["naive_seconds_per_user"] * args.users
    print(f"naive (one vectorised fit_user_stage call per user): {vec['naive_seconds_per_user'] * 1000:.1f} "
          f"ms/user -> {vec_total:.0f}s extrapolated", flush=True)
    result = {
        "users": args.users,
        "samples_per_user": args.samples,
        "feature_dim": args.dim,
        "bank_seconds": round(bank["bank_seconds"], 2),
        "bank_epochs": bank["bank_epochs"],
        "naive_seconds_per_user": round(naive["textbook_seconds_per_user"], 5),
        "naive_seconds_extrapolated": round(naive_total, 1),
        "naive_extrapolated_from_users": min(args.naive_sample, args.users),
        "speedup": round(naive_total / bank["bank_seconds"], 1),
        "naive_vectorized_seconds_extrapolated": round(vec_total, 1),
        "speedup_vs_vectorized_naive": round(vec_total / bank["bank_seconds"], 1),
        "peak_rss_mb": round(bank["bank_peak_rss_mb"], 1),
        "naive_peak_rss_mb": round(vec["naive_peak_rss_mb"], 1),
        "threads": args.threads,
    }
    if not args.skip_scoring:
        sg = _scoring_vs_generation(args)
        print(f"scoring {sg['scoring_cands_per_s']:.0f} cand/s vs generation {sg['generation_cands_per_s']:.2f} "
              f"cand/s -> scoring costs {100 * sg['scoring_cost_fraction']:.2f}% of generating", flush=True)
        result.update({k: round(v, 5) if isinstance(v, float) else v for k, v in sg.items()})
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
