"""Reward-model checkpoints: safetensors for every tensor, JSON for everything else. Never pickle.

One variant folder (`{run_dir}/rm/{dataset}/<variant>/`):

    manifest.json            variant, backbone, feature spec, head/bank config, user index, training config,
                             schema/format versions, metrics
    head.safetensors         the global head (weights + input standardisation buffers)
    bank.safetensors         user variants: the (U, n_out·(k+2)) bank, rows in `user_index` order
    users.safetensors        user contexts (emb_sum (U, d), n_items, len_sum) + the population context
    users_vocab.json         per-user token document frequencies (for the `lex_user` feature)
    backbone.safetensors     only when the backbone was tuned (LoRA adapters or full weights)

Folders are written to a temporary sibling and renamed, so a folder that exists is complete (resumable runs
skip it). Optimizer state for Ray Train resume goes through the same safe formats (`save_optimizer_state`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ttp_ray.data.schema import SCHEMA_VERSION
from ttp_ray.errors import DataError
from ttp_ray.reward.bank import PersonalizedHead
from ttp_ray.reward.config import FeatureConfig, HeadConfig
from ttp_ray.reward.features import UserContext
from ttp_ray.reward.heads import RewardHead

__all__ = [
    "FORMAT_VERSION",
    "RMCheckpoint",
    "is_complete",
    "load_optimizer_state",
    "load_rm_checkpoint",
    "load_tensors",
    "save_optimizer_state",
    "save_rm_checkpoint",
    "save_tensors",
]

FORMAT_VERSION = "1"
MANIFEST = "manifest.json"


def save_tensors(tensors: Mapping[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path), metadata=metadata)


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise DataError("checkpoint file is missing", file=str(path))
    return load_file(str(path))


# ---- optimizer state (safetensors + JSON) -----------------------------------------------------------------------


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return list(v)
    if isinstance(v, float | int | str | bool) or v is None:
        return v
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    raise TypeError(f"optimizer state value of type {type(v).__name__} cannot be stored as JSON")


def save_optimizer_state(optimizer: torch.optim.Optimizer, out_dir: Path, prefix: str) -> None:
    """`optimizer.state_dict()` as `{prefix}.safetensors` (tensors) + `{prefix}.json` (groups, scalars)."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{k}"] = v
            else:
                scalars.setdefault(str(idx), {})[k] = _jsonable(v)
    groups = [{k: _jsonable(v) for k, v in g.items()} for g in sd["param_groups"]]
    save_tensors(tensors, out_dir / f"{prefix}.safetensors")
    (out_dir / f"{prefix}.json").write_text(json.dumps({"param_groups": groups, "scalars": scalars}))


def load_optimizer_state(optimizer: torch.optim.Optimizer, in_dir: Path, prefix: str) -> bool:
    """Restore what `save_optimizer_state` wrote; False (optimizer untouched) when the files are absent."""
    tpath, jpath = in_dir / f"{prefix}.safetensors", in_dir / f"{prefix}.json"
    if not (tpath.is_file() and jpath.is_file()):
        return False
    meta = json.loads(jpath.read_text())
    state: dict[int, dict[str, Any]] = {}
    for key, v in load_tensors(tpath).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    for idx, d in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(d)
    groups = meta["param_groups"]
    for g in groups:
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    return True


# ---- reward-model checkpoints -----------------------------------------------------------------------------------


@dataclass
class RMCheckpoint:
    """A loaded variant folder."""

    manifest: dict[str, Any]
    head: RewardHead
    model: PersonalizedHead | None  # user variants
    user_index: list[str]
    contexts: dict[str, UserContext]
    population: UserContext
    backbone_state: dict[str, torch.Tensor] | None

    @property
    def variant(self) -> str:
        return self.manifest["variant"]

    @property
    def feature_cfg(self) -> FeatureConfig:
        return FeatureConfig.model_validate(self.manifest["feature_spec"]["config"])


def is_complete(variant_dir: str | Path) -> bool:
    """True when the folder holds a finished checkpoint (written atomically, so the manifest is the marker)."""
    return (Path(variant_dir) / MANIFEST).is_file()


def save_rm_checkpoint(
    out_dir: str | Path,
    *,
    variant: str,
    head: RewardHead,
    feature_cfg: FeatureConfig,
    embed_dim: int,
    user_index: list[str],
    contexts: Mapping[str, UserContext],
    population: UserContext,
    model: PersonalizedHead | None = None,
    training: dict[str, Any] | None = None,
    backbone_state: Mapping[str, torch.Tensor] | None = None,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write one variant folder atomically (tmp sibling + rename); returns its path."""
    out = Path(out_dir)
    if model is not None and model.bank.n_users != len(user_index):
        raise ValueError(f"bank has {model.bank.n_users} rows but user_index has {len(user_index)} users")
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_tensors(head.state_dict(), tmp / "head.safetensors")
    if model is not None:
        save_tensors(model.bank.state_dict(), tmp / "bank.safetensors")
    d = population.emb_sum.shape[0]
    emb = torch.stack([contexts[u].emb_sum if u in contexts else torch.zeros(d) for u in user_index]) \
        if user_index else torch.zeros(0, d)
    n_items = torch.tensor([float(contexts[u].n_items) if u in contexts else 0.0 for u in user_index],
                           dtype=torch.float64)
    len_sum = torch.tensor([float(contexts[u].len_sum) if u in contexts else 0.0 for u in user_index],
                           dtype=torch.float64)
    save_tensors(
        {
            "emb_sum": emb,
            "n_items": n_items,
            "len_sum": len_sum,
            "population_emb_sum": population.emb_sum,
            "population_stats": torch.tensor([population.n_items, population.len_sum], dtype=torch.float64),
        },
        tmp / "users.safetensors",
    )
    vocab = {"users": [contexts[u].df if u in contexts else {} for u in user_index], "population": population.df}
    (tmp / "users_vocab.json").write_text(json.dumps(vocab))
    if backbone_state:
        save_tensors(dict(backbone_state), tmp / "backbone.safetensors")
    manifest = {
        "format_version": FORMAT_VERSION,
        "schema_version": SCHEMA_VERSION,
        "variant": variant,
        "backbone": feature_cfg.backbone,
        "backbone_tuned": bool(backbone_state),
        "feature_spec": {"config": feature_cfg.model_dump(), "blocks": feature_cfg.resolved_blocks(),
                         "embed_dim": embed_dim, "dim": head.in_dim},
        "head": head.cfg.model_dump(),
        "bank": None if model is None else {"user_input": model.user_input, "n_users": model.bank.n_users,
                                            "in_dim": model.bank.in_dim, "n_out": model.bank.n_out},
        "user_index": list(user_index),
        "training": training or {},
        "metrics": metrics or {},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out)
    return out


def load_rm_checkpoint(variant_dir: str | Path) -> RMCheckpoint:
    """Load a variant folder written by `save_rm_checkpoint` (safetensors + JSON only)."""
    d = Path(variant_dir)
    mpath = d / MANIFEST
    if not mpath.is_file():
        raise DataError("not a reward-model checkpoint (manifest.json missing)", file=str(d))
    manifest = json.loads(mpath.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(f"checkpoint format {manifest.get('format_version')!r} is not supported (want "
                        f"{FORMAT_VERSION!r})", file=str(mpath), field="format_version")
    head_cfg = HeadConfig.model_validate(manifest["head"])
    head = RewardHead(int(manifest["feature_spec"]["dim"]), head_cfg)
    head.load_state_dict(load_tensors(d / "head.safetensors"))
    head.eval()
    user_index = list(manifest["user_index"])
    model = None
    if manifest["bank"] is not None:
        b = manifest["bank"]
        model = PersonalizedHead(head, int(b["n_users"]), b["user_input"])
        model.bank.load_state_dict(load_tensors(d / "bank.safetensors"))
        model.eval()
    users = load_tensors(d / "users.safetensors")
    vocab = json.loads((d / "users_vocab.json").read_text())
    contexts = {
        u: UserContext(u, users["emb_sum"][i], float(users["n_items"][i]), float(users["len_sum"][i]),
                       vocab["users"][i])
        for i, u in enumerate(user_index)
        if float(users["n_items"][i]) > 0
    }
    pstats = users["population_stats"]
    population = UserContext("<population>", users["population_emb_sum"], float(pstats[0]), float(pstats[1]),
                             vocab["population"])
    bpath = d / "backbone.safetensors"
    return RMCheckpoint(manifest, head, model, user_index, contexts, population,
                        load_tensors(bpath) if bpath.is_file() else None)
