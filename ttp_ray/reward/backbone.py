"""A transformers backbone that turns texts (or query–candidate pairs) into pooled vectors.

Any HF encoder or decoder works: encoders are mean-pooled over real tokens, decoders take the hidden state of
the last real token (right padding; a missing pad token falls back to EOS). Embeddings are L2-normalised so
products and cosines of the feature blocks live on one scale whatever the backbone. LoRA (peft) or full
fine-tuning is opt-in; the frozen default runs under `torch.inference_mode`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ttp_ray.errors import TTPValidationError
from ttp_ray.models import resolve_attention, resolve_dtype, resolve_model

__all__ = ["Backbone", "is_decoder_config"]

log = logging.getLogger(__name__)

# Model types that are decoders even when `config.architectures` is absent.
_DECODER_TYPES = {"gpt2", "gpt_neox", "llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3",
                  "gemma3_text", "phi", "phi3", "olmo", "olmo2", "smollm3", "falcon", "opt", "bloom"}


def is_decoder_config(config: object) -> bool:
    """True for causal LMs (last-token pooling), False for bidirectional encoders (mean pooling)."""
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for a in archs):
        return True
    return getattr(config, "model_type", "") in _DECODER_TYPES


class Backbone(nn.Module):
    """HF model + tokenizer + pooling.

    Args:
        name: a bundled short name (`minilm-l6`), an HF id or a local folder.
        pooling: "auto" (mean for encoders, last token for decoders), "mean" or "last".
        device: torch device for the model.
        dtype: weight dtype, a name of `ttp_ray.models.DTYPES` ("auto": float32 on CPU, where bf16 is emulated
            and slow, bfloat16 on CUDA) or a torch dtype. LoRA adapters stay float32 over 16-bit weights (peft's
            default), so the trainable parameters and the optimizer state are full precision.
        attn_implementation: "auto"/"flash_attention_2" take flash-attention 2 where it can run, else sdpa
            (`ttp_ray.models.resolve_attention`); "sdpa" or "eager" as given.
    """

    def __init__(
        self,
        name: str,
        *,
        pooling: Literal["auto", "mean", "last"] = "auto",
        device: str = "cpu",
        dtype: str | torch.dtype = "auto",
        attn_implementation: str = "auto",
    ) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.name = name
        path = resolve_model(name)
        dev = torch.device(device).type
        self.dtype = dtype if isinstance(dtype, torch.dtype) else resolve_dtype(dtype, dev)
        self.attn_implementation = resolve_attention(attn_implementation, dev, self.dtype)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            try:
                self.model = AutoModel.from_pretrained(path, dtype=self.dtype,
                                                       attn_implementation=self.attn_implementation)
            except ValueError as e:  # an architecture without sdpa: transformers' reference attention
                if self.attn_implementation == "eager":
                    raise
                log.warning("backbone %s: %s attention unsupported (%s); using eager", name,
                            self.attn_implementation, e)
                self.attn_implementation = "eager"
                self.model = AutoModel.from_pretrained(path, dtype=self.dtype, attn_implementation="eager")
        except OSError as e:
            raise TTPValidationError(
                f"cannot load backbone {name!r} (resolved to {path!r}): {e}", parameter="backbone", value=name
            ) from e
        self.is_decoder = is_decoder_config(self.model.config)
        if pooling == "auto":
            pooling = "last" if self.is_decoder else "mean"
        self.pooling = pooling
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"  # last-token pooling indexes the last real token
        self.dim = int(self.model.config.hidden_size)
        self.model.to(device)
        self.freeze()

    @property
    def device(self) -> torch.device:
        """Where the weights are now (a Ray Train worker moves the whole model to its GPU after building it)."""
        return next(self.model.parameters()).device

    # ---- training modes -------------------------------------------------------------------------------------
    def freeze(self) -> None:
        """No gradients anywhere (the default: features are computed once and cached)."""
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def unfreeze(self) -> None:
        """Full fine-tuning."""
        for p in self.model.parameters():
            p.requires_grad_(True)

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations in the backward pass (memory for time: long prompts on a 1.5B backbone).
        Non-reentrant checkpointing, so frozen embeddings under LoRA need no `enable_input_require_grads`."""
        base = self.model.get_base_model() if hasattr(self.model, "peft_config") else self.model
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.config.use_cache = False

    def save_adapter(self, path: str | Path) -> None:
        """The LoRA adapters in PEFT's own format (`adapter_config.json` + `adapter_model.safetensors`), so that
        `PeftModel.from_pretrained(AutoModel.from_pretrained(base), path)` rebuilds the tuned backbone."""
        if not hasattr(self.model, "peft_config"):
            raise ValueError("save_adapter needs a LoRA backbone (apply_lora first)")
        self.model.save_pretrained(str(path), safe_serialization=True)

    def apply_lora(
        self, r: int = 8, alpha: int = 16, dropout: float = 0.0, target_modules: Sequence[str] | None = None
    ) -> None:
        """Wrap the model with peft LoRA adapters (only they train). `target_modules=None` = peft's defaults."""
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(
            r=r,
            lora_alpha=alpha,
            lora_dropout=dropout,
            target_modules=list(target_modules) if target_modules else None,
            bias="none",
        )
        try:
            self.model = get_peft_model(self.model, cfg)
        except ValueError as e:  # peft cannot guess target modules for this architecture
            raise TTPValidationError(
                f"LoRA on {self.name!r}: {e}; set `lora_target_modules`", parameter="lora_target_modules"
            ) from e

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights that differ from the pretrained backbone: LoRA adapters, or everything after full FT."""
        if hasattr(self.model, "peft_config"):
            from peft import get_peft_model_state_dict

            return {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(self.model).items()}
        return {k: v.detach().contiguous() for k, v in self.model.state_dict().items()}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if hasattr(self.model, "peft_config"):
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.model, state)
        else:
            self.model.load_state_dict(state)

    # ---- forward --------------------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str], max_length: int, pairs: Sequence[str] | None = None) -> dict:
        enc = self.tokenizer(
            list(texts),
            list(pairs) if pairs is not None else None,
            padding=True,
            truncation="longest_first" if pairs is not None else True,
            max_length=max_length,
            return_tensors="pt",
        )
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    def pooled(self, batch: dict) -> torch.Tensor:
        """(B, d) L2-normalised pooled states of a tokenized batch (differentiable when not frozen)."""
        hidden = self.model(**batch).last_hidden_state  # (B, T, d)
        mask = batch["attention_mask"]
        if self.pooling == "mean":
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
        else:
            last = (mask.sum(1) - 1).clamp_min(0)  # right padding: index of the last real token
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return F.normalize(pooled.float(), dim=-1)

    def encode(
        self, texts: Sequence[str], *, max_length: int, batch_size: int = 128, pairs: Sequence[str] | None = None
    ) -> torch.Tensor:
        """(len(texts), d) embeddings, without gradients; `pairs` makes it a cross-encoder over (text, pair)."""
        if not len(texts):
            return torch.zeros(0, self.dim)
        # Batch texts of similar length together: padding is most of the cost for short candidates.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]) + (len(pairs[i]) if pairs is not None else 0))
        out = torch.empty(len(texts), self.dim)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                sub_pairs = [pairs[i] for i in idx] if pairs is not None else None
                batch = self.tokenize([texts[i] for i in idx], max_length, sub_pairs)
                out[idx] = self.pooled(batch).cpu()
        return out
