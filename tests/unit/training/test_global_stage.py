"""The global stage's in-process pieces: the head trainer, and the LoRA model DeepSpeed wraps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ttp_ray.reward.backbone import Backbone
from ttp_ray.reward.config import FeatureConfig, HeadConfig
from ttp_ray.reward.features import Featurizer, population_context
from ttp_ray.reward.heads import RewardHead
from ttp_ray.training.config import GlobalStageConfig
from ttp_ray.training.features_job import (
    build_contexts,
    compute_features,
    compute_static_table,
    features_matrix,
)
from ttp_ray.training.global_fit import fit_global_head
from ttp_ray.training.global_worker import GlobalModel, batch_to_torch
from ttp_ray.training.synthetic_bank import synthetic_bank_data
from ttp_ray.training.user_fit import split_by_query


def test_fit_global_head_learns_and_keeps_the_best_epoch() -> None:
    data = synthetic_bank_data(n_users=20, n_queries=6, n_eval_queries=0, collapse_frac=0.0, seed=0)
    val = split_by_query(data.user_idx, data.query_ids, 0.25)
    res = fit_global_head(data.features, data.golden, val, HeadConfig(), GlobalStageConfig(epochs=30, lr=1e-2))
    losses = [h["val_loss"] for h in res.history]
    assert res.best_epoch == int(np.argmin(losses)) + 1
    mse = [h["val_mse"] for h in res.history]
    assert min(mse) < 0.5 * float(data.golden[val].var())  # it learned the population signal


@pytest.mark.parametrize("spec", [{}, {"mode": "pair", "blocks": ["pair", "pair_x_user", "length", "rouge_user"],
                                       "pool_blocks": ["consensus"]}], ids=["bi", "pair+pool"])
def test_lora_global_model_trains_adapters_only(tmp_path, spec) -> None:
    import pyarrow as pa

    fcfg = FeatureConfig(**spec)
    bb = Backbone(fcfg.backbone)
    fz = Featurizer(bb, fcfg)
    profile = pa.table({"user_id": ["u", "u"], "item_id": ["1", "2"], "output": ["[ruff] fix", "[ruff] lint"]})
    ctxs = build_contexts(fz, profile)
    cands = pa.table({"user_id": ["u"] * 3, "query_id": ["1"] * 3, "cand_idx": [0, 1, 2],
                      "mode": ["rm_train"] * 3, "query_text": ["fix the lint rule"] * 3,
                      "text": ["[ruff] fix lint", "docs", "[ruff] rule"], "rouge1": [0.5, 0.0, 0.3],
                      "rougeL": [0.5, 0.0, 0.3]})
    frozen_x = torch.tensor(features_matrix(compute_features(fz, cands, ctxs, population_context(ctxs.values()))))
    static = compute_static_table(fz, cands, ctxs)
    batch = batch_to_torch({k: static[k].to_numpy(zero_copy_only=False) for k in static.column_names}, "rouge1")
    bb.apply_lora(r=4, alpha=8)
    bb.model.train()
    model = GlobalModel({"global-prob": RewardHead(fz.dim, HeadConfig())}, bb, fcfg)
    with torch.no_grad():  # with fresh (zero-B) adapters, the trainable path reproduces the cached features
        model.eval()
        assert torch.allclose(model.features(batch), frozen_x, atol=1e-5)
        model.train()
    raws = model(batch)
    raws["global-prob"].sum().backward()
    lora = [n for n, p in bb.model.named_parameters() if p.requires_grad]
    assert lora and all("lora_" in n for n in lora)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in bb.model.named_parameters() if "lora_B" in n)
    state = model.trainable_state()
    assert any(k.startswith("backbone.") and "lora" in k for k in state)
    assert not any(k.startswith("backbone.") and "lora" not in k for k in state)  # adapters only, not the base


def _epoch_dir(root, epoch: int) -> None:
    import json

    from ttp_ray.training.checkpoint import save_tensors
    from ttp_ray.training.epoch_checkpoints import checkpoint_digest

    d = root / f"epoch_{epoch:04d}"
    d.mkdir(parents=True)
    save_tensors({"w": torch.full((3,), float(epoch))}, d / "model.safetensors")
    save_tensors({"w": torch.zeros(3)}, d / "best.safetensors")
    (d / "state.json").write_text(json.dumps({"epoch": epoch}))
    (d / "optim-rank0.safetensors").write_bytes(b"x")
    (d / "digest.json").write_text(json.dumps(checkpoint_digest(d)))


def test_restore_falls_back_to_the_newest_intact_checkpoint(tmp_path) -> None:
    """A restart whose latest checkpoint was left half-written resumes from the newest older epoch that matches
    its digest, and from scratch when none does (real Ray Train `Checkpoint` objects on a local filesystem)."""
    import pyarrow.fs as pafs
    from ray.train import Checkpoint

    from ttp_ray.training.epoch_checkpoints import restore_checkpoint

    for e in (1, 2, 3):
        _epoch_dir(tmp_path, e)
    (tmp_path / "epoch_0003" / "model.safetensors").write_bytes(b"\0" * 64)  # torn write
    latest = Checkpoint(str(tmp_path / "epoch_0003"), pafs.LocalFileSystem())
    restored, skipped = restore_checkpoint(latest, rank=0)
    model_state, state, _, optim_dir = restored
    assert skipped == ["epoch_0003"] and state == {"epoch": 2} and model_state["w"].tolist() == [2.0] * 3
    assert (optim_dir / "optim-rank0.safetensors").read_bytes() == b"x"
    # an intact latest is used as is; epochs newer than Ray Train's latest are never considered
    restored, skipped = restore_checkpoint(Checkpoint(str(tmp_path / "epoch_0002"), pafs.LocalFileSystem()), rank=0)
    assert skipped == [] and restored[1] == {"epoch": 2}
    (tmp_path / "epoch_0002" / "state.json").write_text('{"epoch": 9}')  # tampered: digest mismatch
    (tmp_path / "epoch_0001" / "digest.json").unlink()  # no digest: not trusted either
    assert restore_checkpoint(latest, rank=0) == (None, ["epoch_0003", "epoch_0002", "epoch_0001"])


def test_tuning_a_backbone_that_no_block_reads_is_a_config_error() -> None:
    from pydantic import ValidationError

    from ttp_ray.training.config import TrainingConfig

    with pytest.raises(ValidationError, match="never read it"):
        TrainingConfig.model_validate({"features": {"blocks": ["rouge_user"], "pool_blocks": ["consensus"]},
                                       "global_stage": {"backbone_mode": "lora"}})
    cfg = TrainingConfig.model_validate({"features": {"blocks": ["cand"], "pool_blocks": ["consensus"]},
                                         "global_stage": {"backbone_mode": "lora"}})
    assert cfg.head_config(probabilistic=True).linear_inputs == 1  # the pool column still enters μ linearly
