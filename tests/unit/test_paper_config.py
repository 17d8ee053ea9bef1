"""`paper.yaml` says what it runs (issue 17): the paper's RM path, not the bundled miniature's defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from ttp_ray.pipeline_config import load_pipeline_config

PAPER = Path(__file__).resolve().parents[2] / "ttp_ray" / "configs" / "paper.yaml"


def test_paper_config_trains_the_papers_rm() -> None:
    cfg = load_pipeline_config(PAPER)
    t = cfg.training
    assert t.features.backbone == "Qwen/Qwen2.5-1.5B"
    assert t.features.mode == "pair" and t.features.resolved_blocks()[0] == "pair"  # prompt ⊕ candidate
    assert t.features.dtype == "bfloat16" and t.features.attn_implementation == "flash_attention_2"
    gs = t.global_stage
    assert gs.backbone_mode == "lora" and gs.lora_r == 16 and gs.lora_alpha == 32
    assert {"q_proj", "v_proj"} <= set(gs.lora_target_modules)
    assert gs.deepspeed and gs.zero_stage == 2 and gs.gradient_checkpointing
    assert t.use_gpu and t.resources_per_worker["GPU"] == 1
    assert cfg.generation.engine.model == "Qwen/Qwen3-4B" and cfg.generation.engine.dtype == "bfloat16"


def test_flash_attention_falls_back_to_sdpa_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    import torch

    from ttp_ray.models import resolve_attention, resolve_dtype

    assert resolve_dtype("auto", "cpu") == torch.float32 and resolve_dtype("auto", "cuda") == torch.bfloat16
    with caplog.at_level("WARNING"):
        assert resolve_attention("flash_attention_2", "cpu", torch.bfloat16) == "sdpa"
    assert "falls back to sdpa" in caplog.text and "the device is cpu" in caplog.text
    assert resolve_attention("auto", "cpu", torch.float32) == "sdpa"
    assert resolve_attention("eager", "cuda", torch.bfloat16) == "eager"
