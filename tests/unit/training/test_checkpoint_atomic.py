"""Overwriting an RM checkpoint is atomic for readers: they load the old or the new version, never none, never a mix.

Every version stores one marker value in its manifest (`training.value`), in every head parameter and in the
bank, so a load that mixed files of two versions is caught.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import ttp_ray.training.checkpoint as ckpt_mod
from ttp_ray.errors import TTPValidationError
from ttp_ray.reward.bank import PersonalizedHead
from ttp_ray.reward.config import STATIC_BLOCKS, FeatureConfig, HeadConfig
from ttp_ray.reward.features import Featurizer, population_context
from ttp_ray.reward.heads import RewardHead
from ttp_ray.reward.scorer import resolve_variant_dir
from ttp_ray.training.checkpoint import RMCheckpoint, is_complete, load_rm_checkpoint, save_rm_checkpoint

N_OVERWRITES = 20


@pytest.fixture(scope="module")
def parts():
    fcfg = FeatureConfig(blocks=list(STATIC_BLOCKS))
    fz = Featurizer(None, fcfg)
    ctxs = fz.build_contexts(["u1", "u2"], ["a", "b"], ["fix it", "docs: update"], keep_items=False)
    return fcfg, fz.dim, ctxs, population_context(ctxs.values())


def _save(parts, path: Path, value: float) -> Path:
    fcfg, dim, ctxs, pop = parts
    head = RewardHead(dim, HeadConfig(hidden_dim=8))
    model = PersonalizedHead(head, 2, "features")
    with torch.no_grad():
        for p in head.parameters():
            p.fill_(value)
        model.bank.weight.fill_(value)
    return save_rm_checkpoint(path, variant="user-prob", head=head, model=model, feature_cfg=fcfg, embed_dim=0,
                              user_index=["u1", "u2"], contexts=ctxs, population=pop, training={"value": value})


def _value(ck: RMCheckpoint) -> float:
    """The version's marker; fails if the files came from different versions."""
    v = ck.manifest["training"]["value"]
    for name, p in ck.head.named_parameters():
        assert torch.all(p == v), f"head {name} is from another version than the manifest ({v})"
    assert torch.all(ck.model.bank.weight == v), f"bank is from another version than the manifest ({v})"
    return v


def _entries(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


def test_layout_is_a_symlink_to_one_complete_version(parts, tmp_path) -> None:
    path = _save(parts, tmp_path / "user-prob", 1.0)
    path = _save(parts, tmp_path / "user-prob", 2.0)
    assert path.is_symlink() and os.readlink(path) == ".user-prob.v2"  # relative: the folder can be moved
    assert _entries(tmp_path) == [".user-prob.lock", ".user-prob.v2", "user-prob"]  # v1 deleted after the swap
    assert is_complete(path) and resolve_variant_dir(tmp_path, "user-prob") == path
    ck = load_rm_checkpoint(path)
    assert _value(ck) == 2.0
    assert ck.manifest_sha256 == hashlib.sha256((path / "manifest.json").read_bytes()).hexdigest()
    with pytest.raises(TTPValidationError, match=r"found \['user-prob'\]"):  # version folders are not listed
        resolve_variant_dir(tmp_path, "user-det")


def test_reader_thread_loading_in_a_loop_never_fails(parts, tmp_path) -> None:
    path = _save(parts, tmp_path / "user-prob", 0.0)
    seen: list[float] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.append(_value(load_rm_checkpoint(path)))
            except BaseException as e:  # noqa: BLE001 - any failure is the finding
                errors.append(e)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(1, N_OVERWRITES + 1):
            _save(parts, path, float(i))
    finally:
        stop.set()
        t.join(timeout=60)
    assert not errors, errors[:3]
    assert seen and set(seen) <= {float(i) for i in range(N_OVERWRITES + 1)}
    assert seen == sorted(seen)  # versions only move forward
    assert _value(load_rm_checkpoint(path)) == N_OVERWRITES
    assert _entries(tmp_path) == [".user-prob.lock", f".user-prob.v{N_OVERWRITES + 1}", "user-prob"]


_READER = """
import json, sys
from pathlib import Path
import torch
from ttp_ray.training.checkpoint import load_rm_checkpoint
path, stop, out = map(Path, sys.argv[1:4])
seen, errors = [], []
while True:
    last = stop.exists()
    try:
        ck = load_rm_checkpoint(path)
        v = ck.manifest["training"]["value"]
        if not (all(bool(torch.all(p == v)) for p in ck.head.parameters()) and bool(torch.all(ck.model.bank.weight == v))):
            raise AssertionError(f"mixed versions around {v}")
        seen.append(v)
    except Exception as e:
        errors.append(repr(e))
    out.with_suffix(".ready").touch()
    if last:
        break
out.write_text(json.dumps({"seen": seen, "errors": errors}))
"""


def test_reader_process_loading_in_a_loop_never_fails(parts, tmp_path) -> None:
    """A second process, like a Serve replica reloading while training overwrites the checkpoint."""
    path = _save(parts, tmp_path / "rm" / "user-prob", 0.0)
    stop, out = tmp_path / "stop", tmp_path / "reader.json"
    proc = subprocess.Popen([sys.executable, "-c", _READER, str(path), str(stop), str(out)])
    try:
        deadline = time.monotonic() + 120  # importing torch on a busy machine
        while not out.with_suffix(".ready").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "reader did not start"
            time.sleep(0.05)
        for i in range(1, N_OVERWRITES + 1):
            _save(parts, path, float(i))
        stop.touch()
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    res = json.loads(out.read_text())
    assert not res["errors"], res["errors"][:3]
    assert res["seen"] and res["seen"] == sorted(res["seen"]) and res["seen"][-1] == N_OVERWRITES


def test_a_save_finishing_mid_read_is_read_whole(parts, tmp_path, monkeypatch) -> None:
    """Deterministic version of the race: the version being read is deleted after its manifest was read."""
    path = _save(parts, tmp_path / "user-prob", 1.0)
    real, calls = ckpt_mod.load_tensors, []

    def load_tensors_racing_a_save(p):
        if not calls:
            _save(parts, path, 2.0)  # swaps in v2 and deletes v1, whose manifest was just read
        calls.append(p)
        return real(p)

    monkeypatch.setattr(ckpt_mod, "load_tensors", load_tensors_racing_a_save)
    assert _value(load_rm_checkpoint(path)) == 2.0
    assert ".user-prob.v1" in str(calls[0]) and ".user-prob.v2" in str(calls[-1])


def test_missing_file_without_a_swap_is_still_an_error(parts, tmp_path) -> None:
    path = _save(parts, tmp_path / "user-prob", 1.0)
    (path / "bank.safetensors").unlink()
    with pytest.raises(Exception, match="missing"):
        load_rm_checkpoint(path)


def _crash_once(monkeypatch, target, name: str) -> None:
    real = getattr(target, name)
    state = {"armed": True}

    def boom(*a, **kw):
        if state["armed"]:
            state["armed"] = False
            raise OSError(errno.EIO, f"simulated crash in {name}")
        return real(*a, **kw)

    monkeypatch.setattr(target, name, boom)


@pytest.mark.parametrize("where", ["writing files", "renaming the version", "swapping the link"])
def test_crash_during_a_save_leaves_the_previous_version_loadable(parts, tmp_path, monkeypatch, where) -> None:
    path = _save(parts, tmp_path / "user-prob", 1.0)
    target, name = {"writing files": (ckpt_mod, "save_tensors"), "renaming the version": (os, "rename"),
                    "swapping the link": (os, "replace")}[where]
    _crash_once(monkeypatch, target, name)
    with pytest.raises(OSError, match="simulated crash"):
        _save(parts, path, 2.0)
    monkeypatch.undo()
    assert is_complete(path) and _value(load_rm_checkpoint(path)) == 1.0
    assert resolve_variant_dir(tmp_path, "user-prob") == path
    _save(parts, path, 3.0)  # the next save cleans what the crash left
    assert _value(load_rm_checkpoint(path)) == 3.0
    assert _entries(tmp_path) == [".user-prob.lock", os.readlink(path), "user-prob"]


def test_leftovers_of_an_interrupted_save_are_ignored_then_cleaned(parts, tmp_path) -> None:
    path = _save(parts, tmp_path / "user-prob", 1.0)
    (tmp_path / ".user-prob.v2.tmp").mkdir()  # killed while writing
    (tmp_path / ".user-prob.v2.tmp" / "head.safetensors").write_bytes(b"\0" * 7)
    shutil.copytree(path.resolve(), tmp_path / ".user-prob.v7")  # killed between the rename and the swap
    os.symlink(".user-prob.v7", tmp_path / ".user-prob.link")
    (tmp_path / ".user-prob.tmp4242").mkdir()  # the temp folder of the old layout
    (tmp_path / ".global-prob.v1").mkdir()  # another variant's: not ours to touch
    assert _value(load_rm_checkpoint(path)) == 1.0  # readers only follow `user-prob`
    _save(parts, path, 2.0)
    assert _value(load_rm_checkpoint(path)) == 2.0
    assert _entries(tmp_path) == [".global-prob.v1", ".user-prob.lock", ".user-prob.v2", "user-prob"]


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "fallback"])
def test_a_variant_folder_of_the_old_layout_is_replaced(parts, tmp_path, monkeypatch, exchange: bool) -> None:
    src = _save(parts, tmp_path / "src" / "user-prob", 1.0)
    legacy = tmp_path / "rm" / "user-prob"
    shutil.copytree(src.resolve(), legacy)  # a real folder, as written before versions existed
    assert _value(load_rm_checkpoint(legacy)) == 1.0
    if not exchange:
        def unsupported(a, b):
            raise OSError(errno.EINVAL, "RENAME_EXCHANGE not supported", str(a))

        monkeypatch.setattr(ckpt_mod, "_exchange", unsupported)
    _save(parts, legacy, 2.0)
    assert legacy.is_symlink() and _value(load_rm_checkpoint(legacy)) == 2.0
    assert _entries(legacy.parent) == [".user-prob.lock", ".user-prob.v1", "user-prob"]
