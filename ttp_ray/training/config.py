"""`TrainingConfig`: the `training:` section — backbone features, the global stage, the per-user stage.

The head architecture (hidden_dim, num_layers, variance map, floor) lives in `user_stage` only: the per-user bank
extends exactly the head the global stage trains, so both stages read it from one place.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ttp_ray.config import StageConfig
from ttp_ray.reward.config import FeatureConfig, HeadConfig, UserStageConfig
from ttp_ray.reward.features import needs_backbone

__all__ = ["VARIANTS", "FeatureJobConfig", "GlobalStageConfig", "TrainingConfig", "UserStageConfig"]

VARIANTS = ("global-det", "global-prob", "user-det", "user-prob")


class GlobalStageConfig(StageConfig):
    """The global stage: backbone (frozen, LoRA or full) + global head, on Ray Train with DeepSpeed.

    Parameters that control distribution:
        num_workers, deepspeed, zero_stage, max_failures, checkpoints_to_keep.
    Parameters that control the backbone:
        backbone_mode, lora_r, lora_alpha, lora_dropout, lora_target_modules, gradient_checkpointing.
    Parameters that control the optimisation:
        epochs, lr, backbone_lr, weight_decay, batch_size, patience, beta_nll.
    """

    num_workers: int = Field(2, ge=0, description="Ray Train workers (0 = in-process local mode).")
    deepspeed: bool = Field(True, description="Wrap the model with `deepspeed.initialize` (else plain DDP).")
    zero_stage: int = Field(2, ge=0, le=3, description="DeepSpeed ZeRO stage.")
    max_failures: int = Field(2, ge=0, description="Worker-group restarts from the last checkpoint (FailureConfig).")
    checkpoints_to_keep: int = Field(2, ge=1, description="Ray Train checkpoints kept (CheckpointConfig).")
    backbone_mode: Literal["frozen", "lora", "full"] = Field(
        "frozen",
        description="'frozen': train heads on cached features (cheap, default). 'lora'/'full': fine-tune the "
        "backbone with the heads on text, then recompute the features with the tuned backbone.",
    )
    lora_r: int = Field(8, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(16, ge=1, description="LoRA alpha.")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout.")
    lora_target_modules: list[str] | None = Field(None, description="LoRA target modules; None = peft's default.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute the tuned backbone's activations in the backward pass (memory for ~30% "
        "more time; long prompts on a 1.5B backbone).")
    epochs: int = Field(20, ge=1, description="Epochs over the training candidates.")
    lr: float = Field(3e-3, gt=0, description="AdamW learning rate of the heads.")
    backbone_lr: float = Field(1e-4, gt=0, description="Learning rate of LoRA/full backbone parameters.")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay.")
    batch_size: int = Field(256, ge=1, description="Candidates per optimizer step per worker.")
    patience: int = Field(5, ge=1, description="Epochs without validation improvement before stopping.")
    beta_nll: float = Field(0.0, ge=0, le=1, description="β of β-NLL for the Global-Prob head.")


class FeatureJobConfig(StageConfig):
    """The Ray Data feature pass (an actor pool holding the encoder)."""

    num_actors: int = Field(1, ge=1, description="Encoder actors in the pool.")
    batch_size: int = Field(512, ge=1, description="Candidate rows per Ray Data batch.")
    num_cpus_per_actor: float = Field(1.0, gt=0, description="Logical CPUs each actor reserves.")
    num_gpus_per_actor: float = Field(
        0.0, ge=0, description="GPUs each feature and scoring actor reserves; > 0 runs the backbone on CUDA there "
        "(a 1.5B backbone over millions of candidates is a GPU job).")


class TrainingConfig(StageConfig):
    """Training of the four reward-model variants and scoring of the eval pools.

    Sections: `features` (backbone and feature spec), `feature_job`, `global_stage`, `user_stage`.
    Top level: which variants, golden column, seed, user-stage workers, what every Ray Train worker reserves
    (`use_gpu`, `resources_per_worker`).
    """

    features: FeatureConfig = Field(default_factory=FeatureConfig)
    feature_job: FeatureJobConfig = Field(default_factory=FeatureJobConfig)
    global_stage: GlobalStageConfig = Field(default_factory=GlobalStageConfig)
    user_stage: UserStageConfig = Field(default_factory=UserStageConfig)
    variants: list[Literal["global-det", "global-prob", "user-det", "user-prob"]] = Field(
        default_factory=lambda: list(VARIANTS), description="RM variants to train and score."
    )
    golden: Literal["rouge1", "rougeL"] = Field("rouge1", description="Golden score column the RMs regress.")
    user_stage_workers: int = Field(
        2, ge=0, description="Ray Train workers of the per-user stage; each owns a disjoint user slice (0 = local)."
    )
    use_gpu: bool = Field(
        False, description="Ray Train workers of both stages reserve a GPU each (`ScalingConfig(use_gpu=True)`) and "
        "move the model and batches to `ray.train.torch.get_device()`. Leave DS_ACCELERATOR unset on GPU workers.",
    )
    resources_per_worker: dict[str, float] | None = Field(
        None, description="Ray resources each Ray Train worker of both stages reserves, e.g. {CPU: 4, GPU: 1, "
        "memory: 8.0e9}. None: the global stage takes a CPU share that leaves one CPU for Ray Data's tasks "
        "(`ray_utils.train_worker_cpus`), the user stage Ray's default (1 CPU, or 1 GPU with `use_gpu`). With "
        "`use_gpu`, GPU: 1 is added when absent.",
    )
    score_batch_size: int = Field(1024, ge=1, description="Rows per Ray Data batch when scoring eval pools.")
    seed: int = Field(0, description="Seed of splits, initialisation and batch order.")

    @model_validator(mode="after")
    def _check(self) -> TrainingConfig:
        if not self.variants:
            raise ValueError("variants must name at least one of " + ", ".join(VARIANTS))
        if len(set(self.variants)) != len(self.variants):
            raise ValueError(f"variants must not repeat, got {self.variants}")
        res = self.resources_per_worker or {}
        negative = sorted(k for k, v in res.items() if v < 0)
        if negative:
            raise ValueError(f"resources_per_worker must not be negative, got {negative[0]}={res[negative[0]]}")
        if res.get("GPU", 0) > 0 and not self.use_gpu:
            raise ValueError(f"resources_per_worker asks for GPU={res['GPU']} but use_gpu is false; set "
                             "training.use_gpu=true (or drop GPU from resources_per_worker)")
        if self.use_gpu and "GPU" in res and res["GPU"] <= 0:
            raise ValueError("use_gpu is true but resources_per_worker sets GPU=0; request a positive GPU count")
        if self.global_stage.backbone_mode != "frozen" and not needs_backbone(self.features):
            raise ValueError(f"backbone_mode={self.global_stage.backbone_mode!r} tunes the backbone, but the feature "
                             f"blocks {self.features.resolved_blocks()} never read it; add a backbone block "
                             "(e.g. cand, pair) or use backbone_mode='frozen'")
        return self

    def head_config(self, *, probabilistic: bool) -> HeadConfig:
        """The head both stages train: `user_stage`'s architecture, with the feature spec's pool columns
        entering μ linearly."""
        return self.user_stage.head_config(probabilistic=probabilistic,
                                           linear_inputs=len(self.features.pool_blocks))
