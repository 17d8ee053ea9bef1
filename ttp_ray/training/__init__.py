"""Training of the reward models: global stage (Ray Train + DeepSpeed), per-user bank stage, checkpoints.

Importing this package does not import `ray`; the Ray entry points (`run_train`, `run_global_stage`,
`run_user_stage`, the feature and scoring jobs) import it when called.
"""

from ttp_ray.training.config import (
    VARIANTS,
    FeatureJobConfig,
    GlobalStageConfig,
    TrainingConfig,
    UserStageConfig,
)
from ttp_ray.training.user_fit import UserStageResult, fit_user_stage, split_by_query

__all__ = [
    "VARIANTS",
    "FeatureJobConfig",
    "GlobalStageConfig",
    "TrainingConfig",
    "UserStageConfig",
    "UserStageResult",
    "fit_user_stage",
    "run_train",
    "split_by_query",
    "train_reward_models_local",
]


def __getattr__(name: str):  # lazy: these pull in Ray / transformers only when used
    if name in ("run_train", "train_reward_models_local"):
        from ttp_ray.training import run

        return getattr(run, name)
    raise AttributeError(name)
