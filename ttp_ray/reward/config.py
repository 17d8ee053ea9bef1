"""Configs of the reward model's pure core: how features are built, and how the per-user stage is fit.

`FeatureConfig` fixes the feature spec (it is stored in every checkpoint, so scoring rebuilds exactly the
features the heads were trained on). `UserStageConfig` holds the head architecture and everything the per-user
bank fit needs; it is the object the Ray Tune sweep searches over (field names match `tune_space.yaml`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ttp_ray.config import StageConfig
from ttp_ray.models import ENCODER_DEFAULT

# Feature blocks, in the order they are concatenated. Vector blocks have the embedding width; the rest are
# scalars. "pair*" blocks need `mode="pair"` (one cross-encoder pass over query + candidate).
VECTOR_BLOCKS = ("cand", "cand_x_query", "cand_x_user", "pair", "pair_x_user")
SCALAR_BLOCKS = ("cos_query", "cos_user", "length", "len_ratio_user", "lex_query", "lex_user", "qtf_sum", "qtf_mean",
                 "rouge_user")
# Blocks computed from text alone (no backbone pass): a spec made only of these needs no encoder at all.
STATIC_BLOCKS = ("length", "len_ratio_user", "lex_query", "lex_user", "qtf_sum", "qtf_mean", "rouge_user")
ALL_BLOCKS = VECTOR_BLOCKS + SCALAR_BLOCKS
BI_DEFAULT_BLOCKS = [
    "cand",
    "cand_x_query",
    "cand_x_user",
    "cos_query",
    "cos_user",
    "length",
    "len_ratio_user",
    "lex_query",
    "lex_user",
    "qtf_sum",
    "qtf_mean",
]
PAIR_DEFAULT_BLOCKS = ["pair", "pair_x_user", "cos_user", "length", "len_ratio_user", "lex_query", "lex_user",
                       "qtf_sum", "qtf_mean"]


class FeatureConfig(StageConfig):
    """How a (user, query, candidate) triple becomes one feature vector.

    Parameters that control the backbone:
        backbone, dtype, attn_implementation, pooling, max_query_tokens, max_cand_tokens, encode_batch_size.
    Parameters that control the features:
        mode, blocks, query_cache_size.
    """

    backbone: str = Field(
        ENCODER_DEFAULT,
        description="HF encoder or decoder (`minilm-l6` bundled; paper scale `Qwen/Qwen2.5-1.5B`), resolved by "
        "`ttp_ray.models.resolve_model`.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Backbone weight dtype. `auto`: float32 on CPU (bf16 is emulated and slow there), "
        "bfloat16 on CUDA. LoRA adapters and heads stay float32; full fine-tuning always loads float32 weights.",
    )
    attn_implementation: Literal["auto", "sdpa", "flash_attention_2", "eager"] = Field(
        "auto", description="Backbone attention kernel: `auto`/`flash_attention_2` use flash-attention 2 where it "
        "can run (flash_attn installed, CUDA, 16-bit weights) and fall back to sdpa with a log line.",
    )
    pooling: Literal["auto", "mean", "last"] = Field(
        "auto", description="Pooling of token states: mean for encoders, last token for decoders when 'auto'."
    )
    mode: Literal["bi", "pair"] = Field(
        "bi",
        description="'bi': embed query, candidate and the user's profile separately (query/user parts cached; "
        "the cheap default). 'pair': one cross-encoder pass over query + candidate per candidate.",
    )
    blocks: list[str] | None = Field(
        None, description=f"Feature blocks in order; None = the mode's default. Known: {list(ALL_BLOCKS)}. [] with "
        "`pool_blocks` = a pool-aware RM only; `ttp_ray/configs/commits.yaml` uses [rouge_user] + consensus "
        "(docs/theory.md §3c).",
    )
    max_query_tokens: int = Field(128, ge=8, description="Truncation of query texts (tokens).")
    max_cand_tokens: int = Field(48, ge=4, description="Truncation of candidate and profile-output texts.")
    encode_batch_size: int = Field(128, ge=1, description="Texts per backbone forward pass.")
    query_cache_size: int = Field(4096, ge=0, description="Query embeddings kept in the LRU cache (0 = off).")
    pool_blocks: list[Literal["consensus"]] = Field(
        default_factory=list,
        description="Pool-aware features, appended after `blocks`: computed from the other candidates of the "
        "pool a candidate is selected among (`ttp_ray.reward.pool`); they enter μ linearly, so Best-of-N over "
        "any N-subset stays exact. [] = per-candidate features only.",
    )

    @model_validator(mode="after")
    def _check_blocks(self) -> FeatureConfig:
        blocks = self.resolved_blocks()
        unknown = sorted(set(blocks) - set(ALL_BLOCKS))
        if unknown:
            raise ValueError(f"unknown feature blocks {unknown}; known: {list(ALL_BLOCKS)}")
        if len(set(blocks)) != len(blocks):
            raise ValueError(f"feature blocks must not repeat, got {blocks}")
        pair_blocks = [b for b in blocks if b.startswith("pair")]
        if self.mode == "bi" and pair_blocks:
            raise ValueError(f"blocks {pair_blocks} need mode='pair' (a cross-encoder pass), got mode='bi'")
        if not blocks and not self.pool_blocks:
            raise ValueError("blocks must name at least one feature block (or pool_blocks one pool block)")
        if len(set(self.pool_blocks)) != len(self.pool_blocks):
            raise ValueError(f"pool_blocks must not repeat, got {self.pool_blocks}")
        return self

    def resolved_blocks(self) -> list[str]:
        if self.blocks is not None:
            return list(self.blocks)
        return list(BI_DEFAULT_BLOCKS if self.mode == "bi" else PAIR_DEFAULT_BLOCKS)


class HeadConfig(StageConfig):
    """Architecture of a reward head (μ, and log-variance for probabilistic heads) on the features."""

    hidden_dim: int = Field(64, ge=1, description="Width of the hidden layers.")
    num_layers: int = Field(1, ge=0, le=4, description="Hidden layers of the trunk (0 = linear head).")
    variance: Literal["softplus", "exp"] = Field(
        "softplus", description="Positive map of the raw variance output s: softplus(s) or exp(s)."
    )
    var_floor: float = Field(1e-4, gt=0, description="Added to σ² so it never falls below this value.")
    probabilistic: bool = Field(True, description="Prob head (μ, σ²) trained with Gaussian NLL, else Det (μ, MSE).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout in the trunk.")
    linear_inputs: int = Field(
        0, ge=0, description="Trailing feature columns (the pool-aware features) that bypass the trunk and enter "
        "μ linearly, so μ stays affine in them and subset Best-of-N is exact.",
    )


class UserStageConfig(StageConfig):
    """The per-user stage: a bank of per-user corrections of the global head, fit for all users at once.

    Parameters that control the head (shared with the global stage, so the bank extends exactly that head):
        hidden_dim, num_layers, variance, var_floor, probabilistic, user_input.
    Parameters that control the loss (`objective` and the architecture hold for the global stage too):
        objective, beta_nll, prior_strength, prior_strength_var.
    Parameters that control the optimisation:
        lr, weight_decay, epochs, batch_size, patience, val_fraction, seed.
    """

    hidden_dim: int = Field(64, ge=1, description="Width of the head's hidden layers.")
    num_layers: int = Field(1, ge=0, le=4, description="Hidden layers of the head's trunk (0 = linear head).")
    variance: Literal["softplus", "exp"] = Field("softplus", description="σ² = floor + softplus(s) or exp(s).")
    var_floor: float = Field(1e-4, gt=0, description="Variance floor added to σ².")
    probabilistic: bool = Field(True, description="User-Prob (Gaussian NLL) if true, else User-Det (MSE).")
    user_input: Literal["hidden", "features"] = Field(
        "features",
        description="What each user's linear correction reads: the standardised features (bank width = feature "
        "width; can express directions the global trunk never learned) or the head's last hidden layer (a "
        "smaller bank, limited to what the population taught the trunk).",
    )
    objective: Literal["pointwise", "within_query"] = Field(
        "pointwise",
        description="What both stages fit. 'pointwise': each candidate's golden score. 'within_query': the "
        "candidates' differences inside their query — every query gets a free offset, profiled out "
        "(`ttp_ray.reward.losses.within_query_loss`), so the RM is not asked to predict how hard a query is, which "
        "selection never uses; σ² is then the spread around the query's level. Same Gaussian NLL / MSE.",
    )
    beta_nll: float = Field(
        0.0, ge=0, le=1, description="β of β-NLL (Seitzer et al. 2022): NLL weighted by stop-grad σ^(2β); 0 = NLL."
    )
    prior_strength: float = Field(
        1.0,
        ge=0,
        description="λ of the Gaussian prior pulling each user's correction to the global head; it acts as a "
        "pseudo-count: a user's objective is mean loss + (λ / n_user) ‖δ_u‖².",
    )
    prior_strength_var: float | None = Field(
        0.01,
        ge=0,
        description="λ of the prior on the variance part of each correction (Prob only); None = prior_strength. "
        "Kept weak by default so each user's σ² can adapt to its own noise level: a strong prior here pins σ²_u "
        "to the global value and turns the NLL back into a rescaled MSE.",
    )
    lr: float = Field(5e-2, gt=0, description="Peak learning rate of lazy Adam (only rows of users in the batch "
                      "move), decayed to 0 by a cosine schedule over `epochs` so each user settles at its optimum.")
    weight_decay: float = Field(
        0.0, ge=0, description="Extra L2 toward the global head on every step a user appears (on top of the prior)."
    )
    epochs: int = Field(300, ge=1, description="Maximum epochs over the users' training candidates.")
    batch_size: int = Field(
        65536,
        ge=1,
        description="Candidates per step; a batch mixes many users. Large batches give each user a low-noise "
        "gradient (a user has ~1 row in a small random batch, and Adam then jitters at the scale of lr, which "
        "drowns users whose scores barely vary); small data sets train full-batch.",
    )
    patience: int = Field(30, ge=1, description="Epochs without per-user validation improvement before that user stops.")
    val_fraction: float = Field(
        0.2, ge=0, lt=1, description="Share of each user's pseudo-queries held out (by query) for early stopping."
    )
    seed: int = Field(0, description="Seed of the validation split and of the batch order.")

    def head_config(self, *, probabilistic: bool | None = None, linear_inputs: int = 0) -> HeadConfig:
        """The head architecture these settings describe (optionally overriding Det/Prob); `linear_inputs` =
        the feature spec's pool columns (`len(FeatureConfig.pool_blocks)`)."""
        return HeadConfig(
            linear_inputs=linear_inputs,
            hidden_dim=self.hidden_dim,
            num_layers=self.num_layers,
            variance=self.variance,
            var_floor=self.var_floor,
            probabilistic=self.probabilistic if probabilistic is None else probabilistic,
        )
