"""The paper's RM path in miniature (issue 17): a causal-LM reward backbone (the bundled SmolLM2-135M, last
token of prompt ⊕ candidate) fine-tuned with LoRA under Ray Train + DeepSpeed ZeRO-2 on 2 workers, the global
heads refit and the per-user bank fit on the tuned features, saved, reloaded the way Serve loads it, and read
back by peft from the PEFT-format adapter. Real components throughout; a few minutes on 2 CPU cores."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from ttp_ray.data.config import DatasetConfig, SyntheticConfig
from ttp_ray.data.loaders import load_dataset
from ttp_ray.data.simulated import simulate_pools
from ttp_ray.reward.scorer import RewardScorer
from ttp_ray.training import TrainingConfig
from ttp_ray.training.run import run_train

MINIATURE = {
    "features": {"backbone": "smollm2-135m-instruct", "mode": "pair", "blocks": ["pair", "length"],
                 "pool_blocks": ["consensus"],  # the pool-aware column rides along the text batches
                 "max_query_tokens": 48, "max_cand_tokens": 16, "encode_batch_size": 32},
    "global_stage": {"num_workers": 2, "zero_stage": 2, "backbone_mode": "lora", "lora_r": 4, "lora_alpha": 8,
                     "lora_target_modules": ["q_proj", "v_proj"], "epochs": 4, "patience": 4, "batch_size": 16,
                     "lr": 3e-3, "backbone_lr": 2e-3},
    "user_stage": {"epochs": 30},
    "user_stage_workers": 0,
    "variants": ["global-prob", "user-prob"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two copies of one small run: LoRA-tuned and frozen (the same pools, splits and feature spec)."""
    run = tmp_path_factory.mktemp("lora")
    ds = load_dataset(DatasetConfig(synthetic=SyntheticConfig(n_users=3, profile_size=6, queries_per_user=1)),
                      run / "work")
    ds.write(run / "data" / "syn")
    for mode, n in (("rm_train", 4), ("eval", 4)):
        out = run / "candidates" / "syn" / mode
        out.mkdir(parents=True)
        pq.write_table(simulate_pools(ds, mode=mode, n_candidates=n), out / "part-00000.parquet")
    frozen = run.with_name(run.name + "-frozen")
    shutil.copytree(run, frozen, ignore=shutil.ignore_patterns("eval"))  # the baseline needs no scoring
    return run, frozen


@pytest.mark.slow
def test_lora_causal_lm_rm_trains_saves_and_serves(ray_session, runs) -> None:
    run, frozen_run = runs
    cfg = TrainingConfig.model_validate(MINIATURE)
    summary = run_train(run, "syn", cfg)
    assert summary["variants"] == {"global-prob": "trained", "user-prob": "trained"}
    g = summary["global"]
    assert g["joint/world_size"] == 2 and g["joint/zero_stage"] == 2  # the backbone really trained under ZeRO-2
    frozen_cfg = TrainingConfig.model_validate(MINIATURE | {
        "global_stage": MINIATURE["global_stage"] | {"backbone_mode": "frozen"}, "variants": ["global-prob"]})
    fz = run_train(frozen_run, "syn", frozen_cfg)["global"]
    # The tuned representation fits the training pools better than the frozen one under the same head and data
    # (the refit's heads read the tuned features). Held-out loss is NOT asserted: at this size (54 training rows)
    # the LoRA-tuned features do not beat the frozen ones on the validation pools (measured: val NLL -0.627 vs
    # -0.647; 6 epochs on 180 rows: 0.771 vs -0.047), which the issue-17 note reports.
    assert g["train_loss"] < fz["train_loss"], (g, fz)
    assert np.isfinite(g["global-prob/val_nll"]) and np.isfinite(g["joint/global-prob/val_nll"])

    # reloaded as Serve loads it, the scorer gives the scores the Ray Data scoring job wrote
    scores = pq.read_table(summary["scores"]).to_pandas()
    evalp = pq.read_table(run / "candidates" / "syn" / "eval").to_pandas()
    sc = RewardScorer.from_checkpoint(run / "rm" / "syn", "user-prob")
    for (uid, qid), pool in evalp.groupby(["user_id", "query_id"]):
        pool = pool.sort_values("cand_idx")
        res = sc.score(uid, pool["query_text"].iloc[0], pool["text"].tolist())
        want = scores[(scores.method == "user-prob") & (scores.user_id == uid) & (scores.query_id == qid)]
        np.testing.assert_allclose(res.mu, want.sort_values("cand_idx")["mu"].to_numpy(), atol=1e-5)

    # the adapter in PEFT's format rebuilds the tuned backbone outside ttp-ray
    from peft import PeftModel
    from transformers import AutoModel

    from ttp_ray.models import resolve_model

    ck = run / "rm" / "syn" / "user-prob" / "adapter"
    assert (ck / "adapter_config.json").is_file() and (ck / "adapter_model.safetensors").is_file()
    peft_model = PeftModel.from_pretrained(AutoModel.from_pretrained(resolve_model("smollm2-135m-instruct")), ck)
    peft_model.eval()
    bb = sc.featurizer.backbone
    q, c = ["a news article about the weather"] * 2, ["sunny days ahead", "rain again"]
    batch = bb.tokenize(q, 64, pairs=c)
    ours = bb.pooled(batch)
    with torch.inference_mode():
        hidden = peft_model(**batch).last_hidden_state
    last = batch["attention_mask"].sum(1) - 1
    theirs = torch.nn.functional.normalize(hidden[torch.arange(2), last].float(), dim=-1)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    untuned = RewardScorer.from_checkpoint(frozen_run / "rm" / "syn", "global-prob").featurizer.backbone
    assert (untuned.pooled(batch) - ours).abs().max() > 1e-4  # and it is not the base model
