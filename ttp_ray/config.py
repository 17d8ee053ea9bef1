"""Config plumbing shared by every stage: YAML in (safe_load), dotted overrides, strict validation.

Each stage owns its pydantic model (`ttp_ray/<stage>/config.py`, subclassing `StageConfig`); `PipelineConfig`
composes them so one YAML drives `ttp generate|train|tune|evaluate|serve|pipeline`. Unknown keys fail with the
sorted list of what was not understood, never silently ignored.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from ttp_ray.errors import TTPValidationError

log = logging.getLogger(__name__)

C = TypeVar("C", bound=BaseModel)


class StageConfig(BaseModel):
    """Base of every stage config: unknown keys are errors, defaults are documented in `Field(description=)`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _list_index(node: list[Any], part: str, dotted: str, value: Any) -> int:
    """`part` as an index into the list `node` (`datasets.0.name=x`), or a config error naming the override."""
    if not part.lstrip("-").isdigit():
        raise TTPValidationError(f"override {dotted!r}: {part!r} must be a list index (0..{len(node) - 1})",
                                 parameter=dotted, value=value)
    i = int(part)
    if not -len(node) <= i < len(node):
        raise TTPValidationError(f"override {dotted!r}: index {i} is out of range (the list has {len(node)} "
                                 "entries)", parameter=dotted, value=value)
    return i


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node: Any = tree
    parts = dotted.split(".")
    for p in parts[:-1]:
        if isinstance(node, list):
            nxt = node[_list_index(node, p, dotted, value)]
        else:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
        if not isinstance(nxt, dict | list):
            raise TTPValidationError(f"override {dotted!r}: {p!r} is not a section", parameter=dotted, value=value)
        node = nxt
    if isinstance(node, list):
        node[_list_index(node, parts[-1], dotted, value)] = value
    else:
        node[parts[-1]] = value


def apply_overrides(tree: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply `key.sub=value` overrides; values are parsed as YAML scalars/lists (`n=4`, `xs=[1,2]`)."""
    for item in overrides or []:
        if "=" not in item:
            raise TTPValidationError(f"override must look like key=value, got {item!r}", parameter="override", value=item)
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), yaml.safe_load(raw))
    return tree


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with `yaml.safe_load` (never executes anything)."""
    path = Path(path)
    if not path.is_file():
        raise TTPValidationError(f"config file not found: {path}", parameter="config", value=str(path))
    with path.open() as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise TTPValidationError(f"{path}: top level must be a mapping, got {type(data).__name__}", parameter="config")
    return data


def validate(cls: type[C], data: dict[str, Any], *, source: str = "<config>") -> C:
    """Validate `data` into `cls`, turning pydantic's errors into one readable `TTPValidationError`."""
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        unknown = sorted(".".join(map(str, err["loc"])) for err in e.errors() if err["type"] == "extra_forbidden")
        lines = [f"{source}: invalid config for {cls.__name__}"]
        if unknown:
            lines.append(f"  unknown keys: {unknown}")
        for err in e.errors():
            if err["type"] != "extra_forbidden":
                loc = ".".join(map(str, err["loc"]))
                lines.append(f"  {loc}: {err['msg']} (got {err.get('input')!r})")
        raise TTPValidationError("\n".join(lines), parameter=unknown[0] if unknown else None) from None


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] | None = None) -> C:
    """Load `cls` from an optional YAML file plus dotted overrides."""
    data = read_yaml(path) if path else {}
    apply_overrides(data, overrides)
    return validate(cls, data, source=str(path or "<defaults>"))


def dump_resolved(cfg: BaseModel, out_dir: str | Path, name: str = "config.resolved.yaml") -> Path:
    """Write the fully resolved config next to a stage's outputs (and log it)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = json.loads(cfg.model_dump_json())
    text = yaml.safe_dump(data, sort_keys=False)
    (out / name).write_text(text)
    log.info("resolved config:\n%s", text)
    return out / name
