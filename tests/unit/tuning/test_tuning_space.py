"""Search-space YAML → ParamSpec → tune.* objects, and the up-front validation against the target config."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import Field

from ttp_ray.config import StageConfig
from ttp_ray.errors import TTPValidationError
from ttp_ray.tuning.space import (
    ParamSpec,
    check_space,
    default_space_path,
    load_space,
    max_value,
    parse_space,
    to_param_space,
)


class Toy(StageConfig):
    lr: float = Field(1e-3, gt=0)
    depth: int = Field(1, ge=1, le=4)
    variance: Literal["softplus", "exp"] = "softplus"
    epochs: int = Field(5, ge=1)


def test_parse_all_distributions_and_pinned_values():
    space = parse_space(
        {
            "lr": {"distribution": "loguniform", "low": 1e-4, "high": 1e-2},
            "depth": {"distribution": "randint", "low": 1, "high": 3},
            "variance": {"distribution": "choice", "values": ["softplus", "exp"]},
            "epochs": 7,
        }
    )
    assert isinstance(space["lr"], ParamSpec) and space["lr"].extremes() == [1e-4, 1e-2]
    assert space["depth"].extremes() == [1, 3]
    assert space["epochs"] == 7
    assert max_value(space, "depth") == 3 and max_value(space, "epochs") == 7
    assert max_value(space, "missing", default=9) == 9
    check_space(space, Toy)


def test_to_param_space_samples_inside_bounds_with_inclusive_randint():
    from ray.tune.search.sample import Categorical, Float, Integer

    space = parse_space(
        {
            "lr": {"distribution": "loguniform", "low": 1e-4, "high": 1e-2},
            "depth": {"distribution": "randint", "low": 1, "high": 2},
            "variance": {"distribution": "choice", "values": ["softplus", "exp"]},
            "u": {"distribution": "uniform", "low": 0.2, "high": 0.4},
            "epochs": 7,
        }
    )
    ps = to_param_space(space)
    assert isinstance(ps["lr"], Float) and isinstance(ps["u"], Float)
    assert isinstance(ps["depth"], Integer) and isinstance(ps["variance"], Categorical)
    assert ps["epochs"] == 7
    depths = set(ps["depth"].sample(size=200))
    assert depths == {1, 2}  # inclusive upper bound, as documented
    lrs = ps["lr"].sample(size=200)
    assert min(lrs) >= 1e-4 and max(lrs) <= 1e-2
    us = ps["u"].sample(size=200)
    assert min(us) >= 0.2 and max(us) <= 0.4


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({"distribution": "loguniform", "low": 0.0, "high": 1.0}, "loguniform needs low > 0"),
        ({"distribution": "uniform", "low": 2.0, "high": 1.0}, "low < high"),
        ({"distribution": "uniform", "low": 1.0}, "needs both"),
        ({"distribution": "choice", "values": []}, "non-empty"),
        ({"distribution": "choice", "values": [1], "low": 0}, "not `low`"),
        ({"distribution": "randint", "low": 1.5, "high": 3}, "integer bounds"),
        ({"distribution": "normal", "low": 0, "high": 1}, "lr"),
        ({"low": 0, "high": 1}, "without `distribution`"),
    ],
)
def test_bad_entries_name_the_parameter(entry, match):
    with pytest.raises(TTPValidationError, match=match) as e:
        parse_space({"lr": entry})
    assert e.value.parameter == "lr"


def test_check_space_rejects_unknown_fields_and_invalid_extremes():
    with pytest.raises(TTPValidationError, match=r"unknown Toy fields \['width'\]"):
        check_space(parse_space({"width": 3}), Toy)
    with pytest.raises(TTPValidationError, match="'depth' allows a value Toy rejects") as e:
        check_space(parse_space({"depth": {"distribution": "randint", "low": 1, "high": 9}}), Toy)
    assert e.value.value == 9
    with pytest.raises(TTPValidationError, match="'variance'"):
        check_space(parse_space({"variance": {"distribution": "choice", "values": ["softplus", "tanh"]}}), Toy)


def test_load_space_from_file_inline_and_default(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("lr: {distribution: loguniform, low: 1.0e-4, high: 1.0e-2}\nepochs: 3\n")
    assert load_space(str(f))["epochs"] == 3
    assert load_space({"epochs": 4})["epochs"] == 4
    assert default_space_path().is_file()
    default = load_space("default")
    assert any(isinstance(v, ParamSpec) for v in default.values())
    with pytest.raises(TTPValidationError, match="not found"):
        load_space(str(tmp_path / "missing.yaml"))
    with pytest.raises(TTPValidationError, match="non-empty mapping"):
        load_space({})
