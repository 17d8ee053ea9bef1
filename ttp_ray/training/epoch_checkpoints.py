"""Per-epoch checkpoints of the global stage: digests written with them, and the newest intact one found
again after a restart.

Each epoch's checkpoint carries the sha256 of rank 0's files; a restart whose latest checkpoint does not match
(a crash or a full disk mid-upload) resumes from the newest older epoch that does (`CheckpointConfig(
num_to_keep)` keeps them), or from scratch when none does. `restore_checkpoint` reads through Ray Train's
`Checkpoint` (imported when called); the rest is plain files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from ttp_ray.errors import DataError
from ttp_ray.training.checkpoint import load_tensors

__all__ = ["CHECKED_FILES", "EPOCH_DIR", "checkpoint_digest", "load_epoch", "restore_checkpoint"]

log = logging.getLogger(__name__)

CHECKED_FILES = ("model.safetensors", "best.safetensors", "state.json")  # rank 0's files, covered by digest.json
# epoch_NNNN for the first attempt, epoch_NNNN-aKK after a restart: a run that fell back to an older epoch
# re-reports the epochs after it, and Ray Train must not see a new checkpoint under a path it already manages
EPOCH_DIR = re.compile(r"epoch_\d{4}(-a\d{2})?$")


def checkpoint_digest(d: Path) -> dict[str, str]:
    """sha256 of rank 0's files in `d` (written as digest.json beside them, checked by `load_epoch`)."""
    return {f: hashlib.sha256((d / f).read_bytes()).hexdigest() for f in CHECKED_FILES}


def load_epoch(d: Path, rank: int) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, torch.Tensor], Path]:
    """(model state, loop state, best state, a private copy of this rank's optimizer files) of one epoch's
    checkpoint folder; DataError when a file is missing or does not match the digest written with it."""
    want = json.loads((d / "digest.json").read_text())
    bad = sorted(f for f, h in checkpoint_digest(d).items() if want.get(f) != h)  # the files are hashed once
    if bad:
        raise DataError(f"checkpoint files {bad} do not match their digest", file=str(d))
    model_state, best = load_tensors(d / "model.safetensors"), load_tensors(d / "best.safetensors")
    state = json.loads((d / "state.json").read_text())
    optim_dir = Path(tempfile.mkdtemp(prefix="ttp-optim-"))
    for f in d.glob(f"optim-rank{rank}.*"):
        (optim_dir / f.name).write_bytes(f.read_bytes())
    return model_state, state, best, optim_dir


def restore_checkpoint(ckpt: Any, rank: int) -> tuple[tuple[Any, ...] | None, list[str]]:
    """Load the newest intact checkpoint at or before `ckpt` (Ray Train's latest): returns its contents (or
    None: start from scratch) and the names of the epochs skipped as corrupt."""
    import pyarrow.fs as pafs
    import ray.train

    path = ckpt.path.rstrip("/")
    parent, latest = path.rsplit("/", 1)
    infos = ckpt.filesystem.get_file_info(pafs.FileSelector(parent))
    older = sorted((i.base_name for i in infos if i.type == pafs.FileType.Directory
                    and EPOCH_DIR.match(i.base_name) and i.base_name < latest), reverse=True)
    skipped = []
    for name in [latest, *older]:
        try:
            with ray.train.Checkpoint(f"{parent}/{name}", ckpt.filesystem).as_directory() as d:
                return load_epoch(Path(d), rank), skipped
        except (OSError, ValueError, DataError, json.JSONDecodeError) as e:  # safetensors raises ValueError-likes
            log.warning("rank %d: checkpoint %s unusable (%s); trying an older one", rank, name, e)
            skipped.append(name)
    return None, skipped
