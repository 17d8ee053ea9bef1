"""Reward-model checkpoints: safetensors for every tensor, JSON for everything else. Never pickle.

One variant folder (`{run_dir}/rm/{dataset}/<variant>/`):

    manifest.json            variant, backbone, feature spec, head/bank config, user index, training config,
                             schema/format versions, metrics
    head.safetensors         the global head (weights + input standardisation buffers)
    bank.safetensors         user variants: the (U, n_out·(k+2)) bank, rows in `user_index` order
    users.safetensors        user contexts (emb_sum (U, d), n_items, len_sum) + the population context
    users_vocab.json         per-user token document frequencies (for the `lex_user` feature)
    backbone.safetensors     only when the backbone was tuned (LoRA adapters or full weights)

Overwrites are atomic for readers. `<variant>` is a relative symlink to a hidden version folder beside it:

    user-prob -> .user-prob.v3     the stable name every reader uses (`resolve_variant_dir`, `is_complete`)
    .user-prob.v3/                 the current version (the files above)
    .user-prob.lock                writers of this variant take it in turn (`flock`); readers never lock

A save writes `.user-prob.v4.tmp/`, fsyncs its files and the folder, renames it to `.user-prob.v4`, points a
temporary symlink at it and `os.replace`s it over `user-prob` (one atomic rename), fsyncs the parent, and only
then deletes `.user-prob.v3`. A crash at any step leaves `user-prob` on a complete version; the next save of the
variant deletes what the crash left (`.tmp` folders, versions nothing points to). A reader that opens one file
through `user-prob` gets one version; `load_rm_checkpoint` pins the version once and reads every file from it,
and if a save deleted that version mid-read it reads the new one whole. A variant folder written before this
layout (a real folder) is replaced by the symlink with an atomic exchange (`renameat2`, Linux). Optimizer state
for Ray Train resume goes through the same safe formats (`save_optimizer_state`).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ttp_ray.data.schema import SCHEMA_VERSION
from ttp_ray.durable import fsync_dir, fsync_file
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
ADAPTER = "adapter"  # the LoRA adapters in PEFT's format (adapter_config.json + adapter_model.safetensors)
# A reader re-pins the version at most this often when saves delete it under its feet, backing off between tries
# (5 tries starved a reader process under back-to-back saves on a loaded 2-core machine: CI run, 2026-12-07).
_READ_ATTEMPTS = 50
_READ_BACKOFF_S = (0.001, 0.05)  # first and largest pause between tries


def save_tensors(tensors: Mapping[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path), metadata=metadata)


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise DataError("checkpoint file is missing", file=str(path))
    try:
        return load_file(str(path))
    except Exception:  # safetensors reports a file deleted since the check as a bare RuntimeError
        if not path.is_file():
            raise DataError("checkpoint file is missing", file=str(path)) from None
        raise


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
    manifest_sha256: str = ""  # of the manifest bytes read: identifies the version that was loaded

    @property
    def variant(self) -> str:
        return self.manifest["variant"]

    @property
    def feature_cfg(self) -> FeatureConfig:
        return FeatureConfig.model_validate(self.manifest["feature_spec"]["config"])


def is_complete(variant_dir: str | Path) -> bool:
    """True when the variant holds a finished checkpoint (versions are swapped in whole: the manifest is the marker)."""
    return (Path(variant_dir) / MANIFEST).is_file()


# ---- atomic variant versions ------------------------------------------------------------------------------------


@contextmanager
def _variant_lock(out: Path) -> Iterator[None]:
    """One writer per variant at a time; released by the OS if the writer dies."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_name(f".{out.name}.lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _leftover_re(name: str) -> re.Pattern[str]:
    # versions (complete or `.tmp`), the temporary symlink, a replaced legacy folder, and the old `.tmp{pid}`
    return re.compile(rf"\.{re.escape(name)}\.(?:v\d+(?:\.tmp)?|link|old|tmp\d+)")


def _current_version(out: Path) -> int | None:
    """N when `out` points to `.{name}.vN`; None when it is missing or a legacy real folder."""
    if not out.is_symlink():
        return None
    m = re.fullmatch(rf"\.{re.escape(out.name)}\.v(\d+)", Path(os.readlink(out)).name)
    return int(m.group(1)) if m else None


def _sweep(out: Path, keep: int | None) -> None:
    """Delete every version but `keep` and whatever an interrupted save left. Call under `_variant_lock`."""
    pat = _leftover_re(out.name)
    for p in out.parent.iterdir():
        if not pat.fullmatch(p.name) or p.name == f".{out.name}.v{keep}":
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _exchange(a: Path, b: Path) -> None:
    """Swap two names atomically (Linux `renameat2(RENAME_EXCHANGE)`); OSError where unsupported."""
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available", str(a))
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), str(a))


def _point(out: Path, version: str) -> None:
    """Make `out` a symlink to the sibling `version` in one atomic step for readers."""
    link = out.with_name(f".{out.name}.link")
    link.unlink(missing_ok=True)
    os.symlink(version, link)  # relative: the rm folder can be moved or copied
    fsync_dir(out.parent)  # the new version's name and the link are on disk before anyone can see them
    if out.is_dir() and not out.is_symlink():  # a variant folder from before this layout
        try:
            _exchange(link, out)  # `out` is now the symlink, `link` the old folder
        except OSError:  # no RENAME_EXCHANGE here: a reader may find `out` missing between these two renames
            old = out.with_name(f".{out.name}.old")
            os.rename(out, old)
            os.replace(link, out)
            shutil.rmtree(old)
        else:
            shutil.rmtree(link)
    else:
        os.replace(link, out)
    fsync_dir(out.parent)


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
    adapter_dir: str | Path | None = None,
) -> Path:
    """Write a new version of the variant and swap it in atomically (see the module docstring); returns `out_dir`.

    `adapter_dir`: a PEFT adapter folder (`Backbone.save_adapter`) copied in as `adapter/`, for tools that load
    the tuned backbone with `PeftModel.from_pretrained`; our own loader reads `backbone.safetensors`.

    Readers of `out_dir` see the previous version until the new one is complete and on disk, then the new one;
    never a missing or half-written checkpoint.
    """
    out = Path(out_dir)
    if model is not None and model.bank.n_users != len(user_index):
        raise ValueError(f"bank has {model.bank.n_users} rows but user_index has {len(user_index)} users")
    with _variant_lock(out):
        cur = _current_version(out)
        _sweep(out, keep=cur)  # leftovers of an interrupted save
        n = (cur or 0) + 1
        version = f".{out.name}.v{n}"
        tmp = out.with_name(f"{version}.tmp")
        tmp.mkdir()
        _write_variant(tmp, variant=variant, head=head, feature_cfg=feature_cfg, embed_dim=embed_dim,
                       user_index=user_index, contexts=contexts, population=population, model=model,
                       training=training, backbone_state=backbone_state, metrics=metrics)
        if adapter_dir is not None:
            shutil.copytree(adapter_dir, tmp / ADAPTER)
            for f in (tmp / ADAPTER).iterdir():
                fsync_file(f)
        for f in tmp.iterdir():
            fsync_file(f)
        fsync_dir(tmp)
        os.rename(tmp, out.with_name(version))
        _point(out, version)
        _sweep(out, keep=n)  # the previous version: no new reader can reach it now
    return out


def _write_variant(
    tmp: Path,
    *,
    variant: str,
    head: RewardHead,
    feature_cfg: FeatureConfig,
    embed_dim: int,
    user_index: list[str],
    contexts: Mapping[str, UserContext],
    population: UserContext,
    model: PersonalizedHead | None,
    training: dict[str, Any] | None,
    backbone_state: Mapping[str, torch.Tensor] | None,
    metrics: dict[str, Any] | None,
) -> None:
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
    if "rouge_user" in feature_cfg.resolved_blocks():  # the profile outputs' token counts, only when read
        vocab["bags"] = [[dict(b) for b in contexts[u].bags.values()] if u in contexts else [] for u in user_index]
        vocab["population_bags"] = [dict(b) for b in population.bags.values()]
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


def load_rm_checkpoint(variant_dir: str | Path) -> RMCheckpoint:
    """Load a variant written by `save_rm_checkpoint` (safetensors + JSON only), every file from one version.

    A save that completes while this reads deletes the version being read; the load then starts over on the new
    version (at most `_READ_ATTEMPTS` times), so it returns the old or the new checkpoint, never a mix.
    """
    d = Path(variant_dir)
    pinned = d.resolve()
    pause, max_pause = _READ_BACKOFF_S
    for _ in range(_READ_ATTEMPTS - 1):
        try:
            return _load_version(pinned)
        except (FileNotFoundError, DataError):
            now = d.resolve()
            if now == pinned:  # not a concurrent swap: a real error
                raise
            pinned = now
            time.sleep(pause)  # let the save that moved the link finish before reading its version
            pause = min(2 * pause, max_pause)
    return _load_version(pinned)


def _bags(rows: list[dict[str, int]]) -> dict[str, Counter[str]]:
    """Profile-output token counts as `UserContext.bags` (keys are positions: serving excludes no item)."""
    return {str(i): Counter(b) for i, b in enumerate(rows)}


def _load_version(d: Path) -> RMCheckpoint:
    mpath = d / MANIFEST
    if not mpath.is_file():
        raise DataError("not a reward-model checkpoint (manifest.json missing)", file=str(d))
    raw = mpath.read_bytes()
    manifest = json.loads(raw)
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
    bags = vocab.get("bags") or [[] for _ in user_index]
    contexts = {
        u: UserContext(u, users["emb_sum"][i], float(users["n_items"][i]), float(users["len_sum"][i]),
                       vocab["users"][i], bags=_bags(bags[i]))
        for i, u in enumerate(user_index)
        if float(users["n_items"][i]) > 0
    }
    pstats = users["population_stats"]
    population = UserContext("<population>", users["population_emb_sum"], float(pstats[0]), float(pstats[1]),
                             vocab["population"], bags=_bags(vocab.get("population_bags", [])))
    bpath = d / "backbone.safetensors"
    return RMCheckpoint(manifest, head, model, user_index, contexts, population,
                        load_tensors(bpath) if bpath.is_file() else None, hashlib.sha256(raw).hexdigest())
