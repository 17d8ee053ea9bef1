"""The search space as data: YAML → validated `ParamSpec`s → `ray.tune` sampling objects.

One entry per UserStageConfig field:

    lr:        {distribution: loguniform, low: 1.0e-4, high: 3.0e-2}
    dropout:   {distribution: uniform, low: 0.0, high: 0.5}
    variance:  {distribution: choice, values: [softplus, exp]}
    depth:     {distribution: randint, low: 1, high: 3}     # both ends inclusive
    epochs:    12                                           # a bare value pins the field

`randint` bounds are inclusive at both ends (YAML readers expect that); it maps to `tune.randint(low, high + 1)`.
Every bound and choice is validated against the target config class up front, so a sweep cannot spend an
hour before a trial samples an invalid value.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from ttp_ray.config import StageConfig, read_yaml, validate
from ttp_ray.errors import TTPValidationError

Distribution = Literal["loguniform", "uniform", "choice", "randint"]


class ParamSpec(StageConfig):
    """One searched parameter: a distribution and its bounds (or choices)."""

    distribution: Distribution
    low: float | None = Field(None, description="Lower bound (loguniform/uniform/randint).")
    high: float | None = Field(None, description="Upper bound (inclusive for randint).")
    values: list[Any] | None = Field(None, description="Choices (choice only).")

    @model_validator(mode="after")
    def _check(self) -> ParamSpec:
        d = self.distribution
        if d == "choice":
            if not self.values:
                raise ValueError("choice needs a non-empty `values` list")
            if self.low is not None or self.high is not None:
                raise ValueError("choice takes `values`, not `low`/`high`")
            return self
        if self.values is not None:
            raise ValueError(f"{d} takes `low`/`high`, not `values`")
        if self.low is None or self.high is None:
            raise ValueError(f"{d} needs both `low` and `high`")
        if not self.low < self.high and not (d == "randint" and self.low == self.high):
            raise ValueError(f"{d} needs low < high, got low={self.low}, high={self.high}")
        if d == "loguniform" and self.low <= 0:
            raise ValueError(f"loguniform needs low > 0, got {self.low}")
        if d == "randint" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError(f"randint needs integer bounds, got low={self.low}, high={self.high}")
        return self

    def extremes(self) -> list[Any]:
        """Values at the edges of the distribution (all choices for `choice`), for up-front validation."""
        if self.distribution == "choice":
            return list(self.values or [])
        if self.distribution == "randint":
            return [int(self.low), int(self.high)]  # type: ignore[arg-type]
        return [self.low, self.high]

    def to_tune(self) -> Any:
        """The `ray.tune` sampling object (imported lazily: parsing a space needs no Ray)."""
        from ray import tune

        if self.distribution == "choice":
            return tune.choice(list(self.values or []))
        if self.distribution == "randint":
            return tune.randint(int(self.low), int(self.high) + 1)  # type: ignore[arg-type]
        if self.distribution == "loguniform":
            return tune.loguniform(self.low, self.high)
        return tune.uniform(self.low, self.high)


# A parsed space: searched parameters as ParamSpec, pinned ones as plain values.
SearchSpace = dict[str, "ParamSpec | Any"]

DEFAULT_SPACE_FILE = "tune_space.yaml"


def default_space_path() -> Path:
    """The packaged default search space (`ttp_ray/configs/tune_space.yaml`)."""
    return Path(str(resources.files("ttp_ray") / "configs" / DEFAULT_SPACE_FILE))


def parse_space(raw: dict[str, Any], *, source: str = "<search_space>") -> SearchSpace:
    """Turn a mapping of `{name: {distribution: ...} | value}` into a `SearchSpace`."""
    if not isinstance(raw, dict) or not raw:
        raise TTPValidationError(f"{source}: search space must be a non-empty mapping", parameter="search_space")
    space: SearchSpace = {}
    for name, entry in raw.items():
        if isinstance(entry, dict) and "distribution" in entry:
            try:
                space[name] = ParamSpec.model_validate(entry)
            except ValueError as e:  # pydantic's ValidationError is a ValueError
                msg = "; ".join(err["msg"] for err in e.errors()) if hasattr(e, "errors") else str(e)
                raise TTPValidationError(f"{source}: parameter {name!r}: {msg}", parameter=name, value=entry) from None
        elif isinstance(entry, dict):
            raise TTPValidationError(
                f"{source}: parameter {name!r} is a mapping without `distribution` "
                "(use {distribution: loguniform|uniform|choice|randint, ...} or a bare value)",
                parameter=name,
                value=entry,
            )
        else:
            space[name] = entry
    return space


def load_space(spec: str | Path | dict[str, Any] = "default") -> SearchSpace:
    """Load a search space from 'default', a YAML path, or an inline mapping."""
    if isinstance(spec, dict):
        return parse_space(spec)
    path = default_space_path() if str(spec) == "default" else Path(spec)
    return parse_space(read_yaml(path), source=str(path))


def check_space(space: SearchSpace, cfg_cls: type[BaseModel], base: dict[str, Any] | None = None) -> None:
    """Fail now if a name is not a field of `cfg_cls`, or if any edge value / choice makes an invalid config.

    Each extreme is validated on its own, on top of `base` and the other parameters' first extremes, so the
    error names the one parameter at fault.
    """
    fields = set(cfg_cls.model_fields)
    unknown = sorted(set(space) - fields)
    if unknown:
        raise TTPValidationError(
            f"search space names unknown {cfg_cls.__name__} fields {unknown}; known: {sorted(fields)}",
            parameter=unknown[0],
        )
    anchor = dict(base or {})
    for name, entry in space.items():
        anchor[name] = entry.extremes()[0] if isinstance(entry, ParamSpec) else entry
    for name, entry in space.items():
        for value in entry.extremes() if isinstance(entry, ParamSpec) else [entry]:
            try:
                validate(cfg_cls, {**anchor, name: value}, source="search_space")
            except TTPValidationError as e:
                raise TTPValidationError(
                    f"search space parameter {name!r} allows a value {cfg_cls.__name__} rejects:\n{e}",
                    parameter=name,
                    value=value,
                ) from None


def to_param_space(space: SearchSpace) -> dict[str, Any]:
    """`Tuner(param_space=...)`: ParamSpecs become tune.* objects, pinned values stay constants."""
    return {k: v.to_tune() if isinstance(v, ParamSpec) else v for k, v in space.items()}


def max_value(space: SearchSpace, name: str, default: Any = None) -> Any:
    """Largest value the space can give `name` (e.g. `epochs`, to size ASHA's max_t)."""
    entry = space.get(name, default)
    if isinstance(entry, ParamSpec):
        return max(entry.extremes())
    return entry
