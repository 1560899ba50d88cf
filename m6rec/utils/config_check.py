"""Check a composed config before any data work: every `_target_` node's values against the target's type hints and
parameter names, local model folders that do not exist, and late interaction without segment data — each a one-line
`ConfigError` naming the config key."""

from __future__ import annotations

import collections.abc
import inspect
import re
import types
import typing
from pathlib import Path
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from m6rec.utils.errors import ConfigError

HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
TOP_LEVEL = {"seed": int, "train": bool, "test": bool, "optimized_mode": typing.Literal["max", "min"]}
UNKNOWN = None  # a type hint this check does not understand: the value is accepted
DOC_TYPES = {"int": int, "float": float, "str": str, "bool": bool}  # documented types of un-annotated parameters
DOC_ARG = re.compile(r"^\s*(\w+) \(`(int|float|str|bool)`", re.MULTILINE)  # Google / HF style: "name (`int`):"


def check_config(cfg: DictConfig) -> None:
    """Raise `ConfigError` for the first value whose type its target rejects, for a key its target does not take,
    for a local model folder (`model.source` / `model.backbone.path`) that does not exist, or for
    `task.layers_online` (late interaction) with a data config that does not give segment batches."""
    for key, hint in TOP_LEVEL.items():
        if key in cfg and _matches(cfg[key], hint) is False:
            raise ConfigError(f"{key}: expected {_shown_hint(hint)}, got {_shown_value(cfg[key])}")
    for key in cfg:
        if key != "hydra" and isinstance(cfg[key], DictConfig):
            _check_node(cfg[key], str(key))
    _check_model_folder(cfg)
    _check_late_interaction_data(cfg)


def _check_node(node: DictConfig, prefix: str) -> None:
    if "_target_" in node:
        _check_target(node, prefix)
    for key in node:
        try:
            value = node[key]
        except OmegaConfBaseException:  # ??? or an interpolation only the target's run can resolve
            continue
        if isinstance(value, DictConfig):
            _check_node(value, f"{prefix}.{key}")


def _check_target(node: DictConfig, prefix: str) -> None:
    try:
        target = get_object(str(node._target_))
        function = target.__init__ if inspect.isclass(target) else target
        params = inspect.signature(target).parameters
    except Exception:  # an unimportable target fails at instantiate with its own message
        return
    hints = {**_documented_hints(target, params), **_type_hints(function, target)}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key in node:
        if key in HYDRA_KEYS:
            continue
        if key not in params and not takes_any:
            name = getattr(target, "__qualname__", str(node._target_))
            raise ConfigError(f"{prefix}.{key}: not a parameter of {name}; parameters: {list(params)}")
        try:
            value = node[key]
        except OmegaConfBaseException:
            continue
        if value is None and node.get("_partial_"):  # a partial's caller may pass it (multi-task: the shared backbone)
            continue
        if key in hints and _matches(value, hints[key]) is False:
            raise ConfigError(f"{prefix}.{key}: expected {_shown_hint(hints[key])}, got {_shown_value(value)}")


def _type_hints(function: Any, target: Any) -> dict[str, Any]:
    """The parameters' type hints: of `function`, else (a dataclass such as peft's configs, whose generated __init__
    hints may not resolve) of the class's own annotated fields; {} when neither resolves."""
    for owner in (function, target if inspect.isclass(target) else None):
        try:
            return typing.get_type_hints(owner) if owner is not None else {}
        except Exception:
            continue
    return {}


def _documented_hints(target: Any, params: typing.Mapping[str, inspect.Parameter]) -> dict[str, Any]:
    """Types an un-annotated target states in its docstring (`name (`int`)`, as transformers' schedules do, e.g.
    `get_linear_schedule_with_warmup`); a parameter that defaults to None also takes None."""
    found = {}
    for name, kind in DOC_ARG.findall(inspect.getdoc(target) or ""):
        if name in params:
            found[name] = DOC_TYPES[kind] | None if params[name].default is None else DOC_TYPES[kind]
    return found


def _matches(value: Any, hint: Any) -> bool | None:
    """Whether `value` fits `hint` (True / False), or UNKNOWN when the hint is beyond this check."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        results = [_matches(value, a) for a in args]
        return True if True in results else (UNKNOWN if UNKNOWN in results else False)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    sequence = (list, tuple, collections.abc.Sequence, collections.abc.Iterable)
    if hint in sequence or origin in sequence:
        return isinstance(value, list | tuple | ListConfig)
    if hint in (dict, collections.abc.Mapping) or origin in (dict, collections.abc.Mapping):
        return isinstance(value, dict | DictConfig)
    if inspect.isclass(hint) and (value is None or isinstance(value, str | int | float | bool)):
        return isinstance(value, hint)  # a plain value where an object (e.g. a Tensor) is expected
    return UNKNOWN


def _shown_hint(hint: Any) -> str:
    text = hint.__name__ if inspect.isclass(hint) else str(hint).replace("typing.", "")
    return text if len(text) <= 100 else text[:97] + "..."


def _shown_value(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _check_model_folder(cfg: DictConfig) -> None:
    """A model path that names a local folder (absolute, ./ or ~) must exist; hub names and `pypi:` specs pass."""
    model = cfg.get("model")
    if not isinstance(model, DictConfig):
        return
    source = model.get("source") if "source" in model and not OmegaConf.is_missing(model, "source") else None
    key, spec = ("model.source", source) if source is not None else ("model.backbone.path", None)
    if spec is None and isinstance(model.get("backbone"), DictConfig):
        spec = model.backbone.get("path")
    if isinstance(spec, str) and spec.startswith(("/", "./", "../", "~")) and not Path(spec).expanduser().is_dir():
        raise ConfigError(f"{key}: folder not found: {spec}")


def _check_late_interaction_data(cfg: DictConfig) -> None:
    """`task.layers_online` set: `data._target_` must be a LateSegmentDataModule (its batches carry `segments`)."""
    task, data = cfg.get("task"), cfg.get("data")
    if not isinstance(task, DictConfig) or task.get("layers_online") is None or not isinstance(data, DictConfig):
        return
    from m6rec.data import LateSegmentDataModule

    try:
        target = get_object(str(data.get("_target_")))
    except Exception:  # an unimportable target fails at instantiate with its own message
        return
    if not (inspect.isclass(target) and issubclass(target, LateSegmentDataModule)):
        raise ConfigError(
            f"task.layers_online={task.layers_online}: late interaction needs segment batches, but data is "
            f"{getattr(target, '__name__', target)}: use data=ml100k_late | ml100k_late_id_tokens (or "
            "data._target_=m6rec.data.LateSegmentDataModule), or task.layers_online=null for full attention"
        )
