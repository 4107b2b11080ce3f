"""Node configuration, ROS-free: the fields of a node's frozen config dataclass.

A node's configuration is a frozen dataclass next to the engine it configures; each field
is declared with :func:`param` (default, description, live or fixed at start) and the class
has a ``validate()`` raising ``ValueError``. This module knows the types and coercions;
:mod:`l1flow_ros.nodes.params` declares such a class as ROS parameters (the conventions are
in its docstring).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any


class ParameterError(ValueError):
    """A parameter file or a set of values a config cannot be built from; the message names
    every parameter at fault."""


def param(default: Any, description: str, *, live: bool = False, name: str | None = None) -> Any:
    """A config field: its default, a one-line description, and whether it may change live.
    ``name``: the ROS parameter's name when it is not the field's, for grouped parameters
    (``joy_axes`` declared as ``joy.axes``: a field name cannot hold a dot)."""
    if isinstance(default, list):
        default = tuple(default)
    metadata = {"description": description, "live": live}
    if name is not None:
        metadata["name"] = name
    return dataclasses.field(default=default, metadata=metadata)


def param_name(f: dataclasses.Field) -> str:
    """The ROS parameter name of a config field."""
    return f.metadata.get("name", f.name)


_SCALARS = {str: "string", bool: "bool", int: "integer", float: "double"}


def _field_type(cls: type, f: dataclasses.Field) -> tuple[type, bool]:
    """(element type, is_array) of a config field from its annotation."""
    hint = typing.get_type_hints(cls)[f.name]
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis and args[0] in _SCALARS and args[0] is not bool:
            return args[0], True
    elif hint in _SCALARS:
        return hint, False
    raise TypeError(f"{cls.__name__}.{f.name}: unsupported parameter type {hint!r}")


def type_name(cls: type, f: dataclasses.Field) -> str:
    elem, array = _field_type(cls, f)
    return _SCALARS[elem] + ("[]" if array else "")


def _coerce_scalar(elem: type, value: Any) -> Any:
    if elem is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if elem is bool:
        ok = isinstance(value, bool)
    elif elem is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, elem)
    if not ok:
        raise TypeError
    if elem is float and math.isnan(value):
        return value  # validate() decides whether NaN means anything
    return value


def coerce(cls: type, f: dataclasses.Field, value: Any) -> Any:
    """The field's value from a ROS parameter value; TypeError with the reason when it does not fit."""
    elem, array = _field_type(cls, f)
    want, name = type_name(cls, f), param_name(f)
    if array:
        if value is None:  # "[]" in a parameter file: ROS has no type for it
            return ()
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise TypeError(f"{name}: expected {want}, got {value!r}")
        items = list(value)
        if elem is str and items == [""]:
            return ()
        try:
            return tuple(_coerce_scalar(elem, v) for v in items)
        except TypeError:
            raise TypeError(f"{name}: expected {want}, got {items!r}") from None
    if value is None:
        raise TypeError(f"{name}: expected {want}, got no value")
    try:
        return _coerce_scalar(elem, value)
    except TypeError:
        raise TypeError(f"{name}: expected {want}, got {value!r}") from None


def validated(cfg: Any) -> Any:
    """``cfg`` after its ``validate()`` (when it has one) passed."""
    validate = getattr(cfg, "validate", None)
    if validate is not None:
        validate()
    return cfg


def with_changes(cfg: Any, changes: dict[str, Any]) -> Any:
    """``cfg`` with ``changes`` (name -> value as ROS gives it) applied, validated; ValueError
    (read-only, mistyped or invalid) with the reason. Names not of the config (rclpy's own
    parameters, such as ``use_sim_time``) are ignored."""
    cls = type(cfg)
    fields = {param_name(f): f for f in dataclasses.fields(cls)}
    coerced = {}
    for name, value in changes.items():
        f = fields.get(name)
        if f is None:
            continue
        if not f.metadata.get("live", False):
            raise ValueError(f"{name} is fixed at start; restart the node to change it")
        try:
            coerced[f.name] = coerce(cls, f, value)
        except TypeError as e:
            raise ValueError(str(e)) from None
    if not coerced:
        return cfg
    try:
        return validated(dataclasses.replace(cfg, **coerced))
    except TypeError as e:
        raise ValueError(str(e)) from None
