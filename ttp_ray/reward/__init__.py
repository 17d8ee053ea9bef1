"""Reward models, pure torch (no `ray` import): backbone features, Det/Prob heads, per-user bank, scorer."""

from ttp_ray.reward.bank import PersonalizedHead, UserBank
from ttp_ray.reward.config import FeatureConfig, HeadConfig, UserStageConfig
from ttp_ray.reward.features import FeatureRequest, Featurizer, UserContext
from ttp_ray.reward.heads import HeadOutput, RewardHead
from ttp_ray.reward.losses import beta_nll, gaussian_nll, head_loss, mse
from ttp_ray.reward.scorer import RewardScorer, ScoreResult

__all__ = [
    "FeatureConfig",
    "FeatureRequest",
    "Featurizer",
    "HeadConfig",
    "HeadOutput",
    "PersonalizedHead",
    "RewardHead",
    "RewardScorer",
    "ScoreResult",
    "UserBank",
    "UserContext",
    "UserStageConfig",
    "beta_nll",
    "gaussian_nll",
    "head_loss",
    "mse",
]
