"""Checkpoints: safetensors + manifest, bit-exact round trips, safe optimizer state."""

from __future__ import annotations

import json

import pytest
import torch

from ttp_ray.errors import DataError
from ttp_ray.reward.bank import PersonalizedHead
from ttp_ray.reward.config import STATIC_BLOCKS, FeatureConfig, HeadConfig
from ttp_ray.reward.features import Featurizer, population_context
from ttp_ray.reward.heads import RewardHead
from ttp_ray.training.checkpoint import (
    is_complete,
    load_optimizer_state,
    load_rm_checkpoint,
    save_optimizer_state,
    save_rm_checkpoint,
)


def _fixture(tmp_path, with_bank: bool):
    torch.manual_seed(0)
    fcfg = FeatureConfig(blocks=list(STATIC_BLOCKS))
    fz = Featurizer(None, fcfg)
    ctxs = fz.build_contexts(["u1", "u1", "u2"], ["a", "b", "c"], ["fix it", "fix tests", "docs: update"],
                             keep_items=False)
    head = RewardHead(fz.dim, HeadConfig(hidden_dim=8))
    head.fit_normalizer(torch.randn(10, fz.dim) * 3 + 1)
    model = None
    if with_bank:
        model = PersonalizedHead(head, 3, "features")
        with torch.no_grad():
            model.bank.weight.normal_()
    path = save_rm_checkpoint(tmp_path / "user-prob", variant="user-prob", head=head, feature_cfg=fcfg,
                              embed_dim=0, user_index=["u1", "u2", "u3"], contexts=ctxs,
                              population=population_context(ctxs.values()), model=model,
                              training={"seed": 0}, metrics={"val_nll": -1.5})
    return path, head, model, ctxs


@pytest.mark.parametrize("with_bank", [True, False])
def test_round_trip_is_bit_exact(tmp_path, with_bank: bool) -> None:
    path, head, model, ctxs = _fixture(tmp_path, with_bank)
    assert is_complete(path) and not list(tmp_path.glob(".*tmp*"))  # atomic: no temp folder left behind
    ck = load_rm_checkpoint(path)
    for k, v in head.state_dict().items():
        assert torch.equal(v, ck.head.state_dict()[k]), k
    if with_bank:
        assert torch.equal(model.bank.weight, ck.model.bank.weight)
        assert torch.equal(model.bank.gain_center, ck.model.bank.gain_center)
    else:
        assert ck.model is None
    assert ck.user_index == ["u1", "u2", "u3"]
    assert set(ck.contexts) == {"u1", "u2"}  # u3 has no profile: it scores with the population context
    for u, c in ctxs.items():
        assert torch.equal(c.emb_sum, ck.contexts[u].emb_sum) and c.df == ck.contexts[u].df
        assert (c.n_items, c.len_sum) == (ck.contexts[u].n_items, ck.contexts[u].len_sum)
        assert list(c.bags.values()) == list(ck.contexts[u].bags.values())  # rouge_user's profile outputs
        assert c.rouge_share(["fix", "docs"]) == ck.contexts[u].rouge_share(["fix", "docs"]) > 0
    m = ck.manifest
    assert m["variant"] == "user-prob" and m["backbone"] == "minilm-l6" and m["feature_spec"]["dim"] == head.in_dim
    assert m["schema_version"] == "1" and m["training"] == {"seed": 0} and m["metrics"] == {"val_nll": -1.5}
    x = torch.randn(4, head.in_dim)
    assert torch.equal(head(x).mu, ck.head(x).mu)
    # saving what was loaded reproduces the same bytes for every tensor file
    again = save_rm_checkpoint(tmp_path / "again", variant="user-prob", head=ck.head, feature_cfg=ck.feature_cfg,
                               embed_dim=0, user_index=ck.user_index, contexts=ck.contexts,
                               population=ck.population, model=ck.model, training={"seed": 0},
                               metrics={"val_nll": -1.5})
    for f in ("head.safetensors", "users.safetensors", "users_vocab.json") + (("bank.safetensors",) if with_bank
                                                                              else ()):
        assert (path / f).read_bytes() == (again / f).read_bytes(), f


def test_missing_or_foreign_checkpoint_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(DataError, match="manifest.json missing"):
        load_rm_checkpoint(tmp_path)
    path, *_ = _fixture(tmp_path, True)
    m = json.loads((path / "manifest.json").read_text())
    m["format_version"] = "99"
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DataError, match="format"):
        load_rm_checkpoint(path)


def test_optimizer_state_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=0.01, betas=(0.8, 0.9))
    for _ in range(3):
        net(torch.randn(5, 3)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    save_optimizer_state(opt, tmp_path, "optim-rank0")
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.pkl"))
    net2 = torch.nn.Linear(3, 2)
    net2.load_state_dict(net.state_dict())
    opt2 = torch.optim.AdamW(net2.parameters(), lr=0.5)
    assert load_optimizer_state(opt2, tmp_path, "optim-rank0")
    assert opt2.param_groups[0]["lr"] == 0.01 and tuple(opt2.param_groups[0]["betas"]) == (0.8, 0.9)
    for a, b in zip(opt.state.values(), opt2.state.values(), strict=True):
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(a[k], b[k])
    x = torch.randn(4, 3)  # the next step is identical
    for n, o in ((net, opt), (net2, opt2)):
        n(x).pow(2).mean().backward()
        o.step()
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), net2.parameters(), strict=True))
    assert not load_optimizer_state(opt2, tmp_path, "optim-rank1")
