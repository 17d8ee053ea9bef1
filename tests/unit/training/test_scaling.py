"""`training.use_gpu` and `training.resources_per_worker` reach both Ray Train stages' ScalingConfig.

No cluster and no GPU needed: `ScalingConfig` is a plain dataclass, built here by the same function the
stages call (`ttp_ray.training.scaling.scaling_config`)."""

from __future__ import annotations

import pytest

from ttp_ray.config import validate
from ttp_ray.errors import TTPValidationError
from ttp_ray.training.config import TrainingConfig
from ttp_ray.training.scaling import scaling_config, worker_resources


def test_defaults_keep_the_cpu_share_and_no_gpu() -> None:
    cfg = TrainingConfig()
    assert cfg.use_gpu is False and cfg.resources_per_worker is None
    sc = scaling_config(2, use_gpu=cfg.use_gpu, resources_per_worker=cfg.resources_per_worker, default_cpus=0.5)
    assert (sc.num_workers, sc.use_gpu, sc.resources_per_worker) == (2, False, {"CPU": 0.5})
    user = scaling_config(3, use_gpu=cfg.use_gpu, resources_per_worker=cfg.resources_per_worker)
    assert (user.num_workers, user.use_gpu, user.resources_per_worker) == (3, False, None)  # Ray's 1 CPU
    assert user.num_cpus_per_worker == 1 and user.num_gpus_per_worker == 0


def test_config_fields_reach_the_scaling_config() -> None:
    cfg = validate(TrainingConfig, {"use_gpu": True, "resources_per_worker": {"CPU": 4, "memory": 8e9}}, source="training")
    sc = scaling_config(2, use_gpu=cfg.use_gpu, resources_per_worker=cfg.resources_per_worker, default_cpus=0.5)
    assert sc.use_gpu is True and sc.num_workers == 2
    assert sc.resources_per_worker == {"CPU": 4.0, "memory": 8e9, "GPU": 1.0}  # the GPU added, the rest as given
    assert (sc.num_cpus_per_worker, sc.num_gpus_per_worker) == (4.0, 1.0)
    # the user stage (no default CPU share): one GPU per worker
    user = scaling_config(2, use_gpu=True, resources_per_worker=None)
    assert user.use_gpu is True and user.num_gpus_per_worker == 1


def test_worker_resources_keeps_an_explicit_gpu_count() -> None:
    assert worker_resources(use_gpu=True, resources_per_worker={"GPU": 2}, default_cpus=1.0) == {"GPU": 2.0}
    assert worker_resources(use_gpu=True, resources_per_worker=None, default_cpus=1.5) == {"CPU": 1.5, "GPU": 1.0}
    assert worker_resources(use_gpu=False, resources_per_worker=None, default_cpus=None) is None


@pytest.mark.parametrize(
    ("section", "match"),
    [
        ({"resources_per_worker": {"GPU": 1}}, "use_gpu is false"),
        ({"use_gpu": True, "resources_per_worker": {"GPU": 0}}, "GPU=0"),
        ({"resources_per_worker": {"CPU": -1}}, "CPU=-1"),
    ],
)
def test_inconsistent_gpu_settings_are_config_errors(section: dict, match: str) -> None:
    with pytest.raises(TTPValidationError, match=match):
        validate(TrainingConfig, section, source="training")
