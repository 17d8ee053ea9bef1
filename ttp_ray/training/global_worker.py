"""What a Ray Train worker of the global stage builds and reads, without Ray: the typed loop config, the model
DeepSpeed wraps, a dataset shard pulled into tensors, the DeepSpeed config and the summed head losses.

Nothing here imports Ray: a shard is anything with `iter_batches(batch_size=, batch_format="numpy")`, so the
pieces are unit-tested in-process; `global_stage` runs them inside `TorchTrainer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from ttp_ray.reward.config import FeatureConfig, HeadConfig
from ttp_ray.reward.heads import RewardHead, raw_to_mu_var
from ttp_ray.reward.losses import objective_loss
from ttp_ray.reward.pool import query_groups
from ttp_ray.training.config import GlobalStageConfig

__all__ = ["FaultInjection", "GlobalLoopConfig", "GlobalModel", "batch_to_torch", "build_model", "ds_config",
           "head_losses", "materialize_shard", "param_groups", "take_rows", "to_device"]


@dataclass
class FaultInjection:
    """Testing hook: `rank` exits with `os._exit(1)` early in `epoch` on its first attempt.

    The first attempt is detected by the absence of `marker` (a file the failing worker creates before dying).
    The worker dies `delay_s` seconds into the epoch: Ray Train's controller collects reports when it polls
    the workers (every 2 s), so a crash right after a report can lose that report, and the run then resumes
    one epoch earlier (still from a checkpoint). The delay makes the resume point deterministic for tests.
    """

    marker: str
    epoch: int
    rank: int = 1
    delay_s: float = 8.0
    corrupt_latest: bool = False  # also overwrite the newest epoch checkpoint's model file before dying



class GlobalLoopConfig(BaseModel):
    """Everything `_global_train_loop` reads, typed. Ray Train V2 hands `train_loop_config` to every worker as
    a dict, so `run_global_stage` passes `.model_dump()` and each worker validates it back (a misspelt or
    missing key fails at the worker's first line, not as a KeyError mid-epoch)."""

    model_config = ConfigDict(extra="forbid")

    head_cfgs: dict[str, HeadConfig]  # name -> architecture, e.g. {"global-det": ..., "global-prob": ...}
    global_cfg: GlobalStageConfig
    feature_cfg: FeatureConfig
    in_dim: int  # feature width
    x_mean: list[float]  # (in_dim,) feature standardisation, from the training rows
    x_std: list[float]
    g_mean: float  # golden mean / variance of the training rows: the heads' starting output
    g_var: float
    golden: str
    seed: int
    objective: Literal["pointwise", "within_query"] = "pointwise"
    has_val: bool
    use_gpu: bool = False  # move the model and batches to `ray.train.torch.get_device()`
    fault: FaultInjection | None = None
    fault_storage_dir: str | None = None  # the run's checkpoint folder (FaultInjection.corrupt_latest)


class GlobalModel(nn.Module):
    """What DeepSpeed wraps: one or more global heads (e.g. Det and Prob, trained side by side on the same
    batches), plus the backbone when it trains (LoRA/full) on text batches."""

    def __init__(self, heads: dict[str, RewardHead], backbone: Any = None,
                 feature_cfg: FeatureConfig | None = None) -> None:
        super().__init__()
        self.heads = nn.ModuleDict(heads)
        self.backbone = backbone
        self.feature_cfg = feature_cfg

    def features(self, batch: dict[str, Any]) -> torch.Tensor:
        if self.backbone is None:
            return batch["features"]
        from ttp_ray.reward.features import STATIC_SCALARS, assemble, backbone_passes

        fc, bb = self.feature_cfg, self.backbone
        blocks = fc.resolved_blocks()
        cands, queries = list(batch["text"]), list(batch["query_text"])
        need_cand, need_query, need_pair = backbone_passes(blocks)
        e_c = e_q = h_pair = None
        if need_cand:
            e_c = bb.pooled(bb.tokenize(cands, fc.max_cand_tokens))
        if need_query:
            e_q = bb.pooled(bb.tokenize(queries, fc.max_query_tokens))
        if need_pair:  # the paper's RM: last token of prompt ⊕ candidate
            h_pair = bb.pooled(bb.tokenize(queries, fc.max_query_tokens + fc.max_cand_tokens, pairs=cands))
        scal = batch["scalars"]
        x = (assemble(blocks, cu=batch["cu"], scalars={k: scal[:, i] for i, k in enumerate(STATIC_SCALARS)},
                      e_c=e_c, e_q=e_q, h_pair=h_pair) if blocks else batch["cu"][:, :0])
        return torch.cat([x, batch["pool"]], dim=1) if "pool" in batch else x

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        x = self.features(batch)
        return {name: head.raw(x) for name, head in self.heads.items()}

    def trainable_state(self) -> dict[str, torch.Tensor]:
        state = {f"heads.{k}": v.detach().clone() for k, v in self.heads.state_dict().items()}
        if self.backbone is not None:
            state.update({f"backbone.{k}": v.clone() for k, v in self.backbone.trainable_state_dict().items()})
        return state

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        self.heads.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("heads.")})
        if self.backbone is not None:
            self.backbone.load_trainable_state_dict(
                {k[9:]: v for k, v in state.items() if k.startswith("backbone.")})


def batch_to_torch(batch: dict[str, np.ndarray], golden: str) -> dict[str, Any]:
    def mat(col: np.ndarray) -> torch.Tensor:
        return torch.tensor(np.stack(col) if col.dtype == object else col, dtype=torch.float32)

    out: dict[str, Any] = {"golden": torch.tensor(batch[golden], dtype=torch.float32)}
    if "user_id" in batch and "query_id" in batch:  # what orders the rows, and the within-query groups
        cand = batch["cand_idx"] if "cand_idx" in batch else np.zeros(len(batch[golden]), dtype=np.int64)
        out["_key"] = list(zip(batch["user_id"].tolist(), batch["query_id"].tolist(), cand.tolist(), strict=True))
    if "features" in batch:
        out["features"] = mat(batch["features"])
    else:
        out["text"], out["query_text"] = list(batch["text"]), list(batch["query_text"])
        out["cu"], out["scalars"] = mat(batch["cu"]), mat(batch["scalars"])
        if "pool" in batch:  # pool-aware columns, appended after the blocks as in the cached features
            out["pool"] = mat(batch["pool"])
    return out


def materialize_shard(shard: Any, golden: str) -> dict[str, Any]:
    """Pull a worker's dataset shard into memory once (cached features are small; re-streaming the shard
    every epoch costs a Ray Data execution per epoch), rows in (user, query, candidate) order.

    Ray Data hands a shard's blocks over in the order its tasks finish, so without the sort the same rows meet
    the seeded permutation in another order on every run (measured: two runs of one config differed by up to
    2e-4 in μ). `group` is each row's query within the shard (the within-query objective's groups).
    """
    parts = [batch_to_torch(b, golden) for b in shard.iter_batches(batch_size=4096, batch_format="numpy")]
    if not parts:
        return {"golden": torch.zeros(0)}
    out: dict[str, Any] = {}
    for k in parts[0]:
        out[k] = torch.cat([p[k] for p in parts]) if torch.is_tensor(parts[0][k]) else sum((p[k] for p in parts), [])
    keys = out.pop("_key", None)
    if keys is not None:
        order = sorted(range(len(keys)), key=keys.__getitem__)
        out = take_rows(out, torch.tensor(order, dtype=torch.long))
        keys = [keys[i] for i in order]
        out["group"] = torch.as_tensor(query_groups([k[0] for k in keys], [k[1] for k in keys]))
    return out


def take_rows(data: dict[str, Any], idx: torch.Tensor) -> dict[str, Any]:
    """Rows `idx` of every column of a materialised shard (tensors indexed, lists picked)."""
    return {k: v[idx] if torch.is_tensor(v) else [v[i] for i in idx.tolist()] for k, v in data.items()}


def to_device(data: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The tensors of a materialised shard on `device` (lists of strings stay where they are)."""
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in data.items()}


def build_model(loop: GlobalLoopConfig) -> GlobalModel:
    """The heads (standardised on the training features, started at the golden mean / variance) and, for
    LoRA/full, the backbone being tuned; seeded by `loop.seed`, so every rank starts from the same weights."""
    gcfg = loop.global_cfg
    torch.manual_seed(loop.seed)
    heads = {}
    for name, hc in loop.head_cfgs.items():
        head = RewardHead(loop.in_dim, hc)
        with torch.no_grad():
            head.x_mean.copy_(torch.as_tensor(loop.x_mean))
            head.x_std.copy_(torch.as_tensor(loop.x_std))
        head.init_output(loop.g_mean, loop.g_var)
        heads[name] = head
    if gcfg.backbone_mode == "frozen":
        return GlobalModel(heads)
    from ttp_ray.reward.backbone import Backbone

    fcfg = loop.feature_cfg
    # Full fine-tuning trains every weight: keep them float32 (AdamW on bf16 weights loses small updates). Under
    # LoRA the frozen base takes `fcfg.dtype` (bf16 on GPU) and the adapters stay float32.
    dtype = fcfg.dtype if gcfg.backbone_mode == "lora" else "float32"
    backbone = Backbone(fcfg.backbone, pooling=fcfg.pooling, device="cuda" if loop.use_gpu else "cpu", dtype=dtype,
                        attn_implementation=fcfg.attn_implementation)
    if gcfg.backbone_mode == "lora":
        backbone.apply_lora(gcfg.lora_r, gcfg.lora_alpha, gcfg.lora_dropout, gcfg.lora_target_modules)
    else:
        backbone.unfreeze()
    if gcfg.gradient_checkpointing:
        backbone.enable_gradient_checkpointing()
    backbone.model.train()
    return GlobalModel(heads, backbone, fcfg)


def param_groups(model: GlobalModel, gcfg: GlobalStageConfig) -> list[dict[str, Any]]:
    """AdamW groups: the heads at `lr`, a tuned backbone at its own (smaller) `backbone_lr`."""
    groups = [{"params": [p for p in model.heads.parameters() if p.requires_grad], "lr": gcfg.lr}]
    if model.backbone is not None:
        groups.append({"params": [p for p in model.backbone.parameters() if p.requires_grad],
                       "lr": gcfg.backbone_lr})
    return groups


def ds_config(gcfg: GlobalStageConfig, world: int) -> dict[str, Any]:
    """The `deepspeed.initialize` config: ZeRO stage from config, one micro-batch per step per worker."""
    return {
        "train_micro_batch_size_per_gpu": gcfg.batch_size,
        "train_batch_size": gcfg.batch_size * max(world, 1),
        "gradient_accumulation_steps": 1,
        # Heads on frozen features are independent problems: a global-norm clip would couple Det and Prob (and
        # the in-process trainer does not clip). A shared tuned backbone keeps the usual clip.
        "gradient_clipping": 1.0 if gcfg.backbone_mode != "frozen" else 0.0,
        "zero_optimization": {"stage": gcfg.zero_stage},
        "zero_allow_untested_optimizer": True,  # a client torch AdamW (no fused CPU op to build)
        "steps_per_print": 1 << 30,
    }


def head_losses(raws: dict[str, torch.Tensor], g: torch.Tensor, head_cfgs: dict[str, HeadConfig],
                beta: float, active: set[str] | None = None, group: torch.Tensor | None = None,
                objective: str = "pointwise") -> torch.Tensor:
    """Sum of the heads' mean losses (only `active` heads: a head that early-stopped trains no further)."""
    total = torch.zeros((), device=g.device)
    for name, raw in raws.items():
        if active is not None and name not in active:
            continue
        out = raw_to_mu_var(raw, head_cfgs[name])
        total = total + objective_loss(out.mu, out.var, g, group, beta, objective).mean()
    return total
