"""Node configuration, ROS-free: the fields of a node's frozen config dataclass.

A node's configuration is a frozen dataclass next to the engine it configures; each field
is declared with :func:`param` (default, description, live or fixed at start) and the class
has a ``validate()`` raising ``ValueError``. This module knows the types and coercions;
:mod:`l1flow_ros.nodes.params` declares such a class as ROS parameters (the conventions are
in its docstring).

It also checks a ROS 2 parameter file against the config classes before any node starts
(:func:`check_parameter_file`, used by the launcher): every problem is one line naming the
file and line, the node and the parameter, e.g.

    my_arm.yaml:41: executor_node: unknown parameter 'max_velocty' (did you mean 'max_velocity'?)
    my_arm.yaml:37: executor_node: rate_hz: expected double, got 'fast'

The file is read as rcl reads ``--params-file`` (rcl_yaml_param_parser's ``get_value``):
a plain scalar is a bool (``true``, ``yes``, ``on``, ... in three casings), else an integer
(``strtoll`` base 0 over the whole text), else a double (``strtod``, and ``.nan`` / ``.inf``),
else a string; a quoted or ``!!str`` scalar is a string; nested mappings are dotted names;
a list holds one type. PyYAML's own typing differs (``1e3`` is a string to it, a double to
rcl), so the check sees the values the node will see.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml


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


# -- parameter files, checked before any node starts ------------------------------------------------

# Parameters rclpy declares on every node itself, and prefixes of those it declares on request.
ROS_OWN_PARAMETERS = frozenset({"use_sim_time", "start_type_description_service"})
ROS_OWN_PREFIXES = ("qos_overrides.",)


def unknown_parameter(name: str, known: Iterable[str]) -> str:
    """``unknown parameter 'max_velocty' (did you mean 'max_velocity'?)``."""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f"unknown parameter {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")


def is_ros_own(name: str) -> bool:
    return name in ROS_OWN_PARAMETERS or name.startswith(ROS_OWN_PREFIXES)


def check_values(cls: type, values: Mapping[str, Any]) -> tuple[Any | None, list[tuple[str, str]]]:
    """``values`` (ROS name -> value as ROS gives it) over ``cls``'s defaults: (the validated
    config or None, [(parameter, problem), ...]). Unknown names, mistyped values and a failed
    ``validate()`` are problems; rclpy's own parameters are let through. A ``validate()``
    message names its parameters; its "parameter" is the first field name it mentions."""
    fields = {param_name(f): f for f in dataclasses.fields(cls)}
    problems: list[tuple[str, str]] = []
    coerced: dict[str, Any] = {}
    for name, value in values.items():
        f = fields.get(name)
        if f is None:
            if not is_ros_own(name):
                problems.append((name, unknown_parameter(name, fields)))
            continue
        try:
            coerced[f.name] = coerce(cls, f, value)
        except TypeError as e:
            problems.append((name, str(e)))
    if problems:
        return None, problems
    try:
        return validated(cls(**coerced)), []
    except (ValueError, TypeError) as e:
        text = str(e)
        named = [n for n in fields if re.search(rf"(?<![\w.]){re.escape(n)}(?![\w])", text)]
        return None, [(named[0] if named else "", text)]


class _Where:
    """Where a value was set: a file line or a ``-p`` override."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


_TRUE = {"Y", "y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"}
_FALSE = {"N", "n", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"}
_SPECIAL = {".nan": math.nan, ".NaN": math.nan, ".NAN": math.nan}
_SPECIAL |= {f"{s}{inf}": (-math.inf if s == "-" else math.inf)
             for s in ("", "+", "-") for inf in (".inf", ".Inf", ".INF")}
_STRTOLL = re.compile(r"\s*[+-]?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
_STRTOD = re.compile(r"\s*[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|inf(inity)?|nan)", re.IGNORECASE)
_STR_TAG = "tag:yaml.org,2002:str"


def ros_scalar(text: str, quoted: bool = False) -> Any:
    """A scalar's value as rcl types it (see the module docstring)."""
    if quoted:
        return text
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    m = _STRTOLL.fullmatch(text)
    if m:
        digits = m.group(1)
        if digits[:2] in ("0x", "0X"):
            v = int(digits[2:], 16)
        elif digits.startswith("0"):
            v = int(digits, 8)  # strtoll base 0: a leading 0 is octal
        else:
            v = int(digits)
        v = -v if text.lstrip().startswith("-") else v
        if -(2**63) <= v < 2**63:  # out of range: strtoll fails, strtod takes it
            return v
    if text in _SPECIAL:
        return _SPECIAL[text]
    if _STRTOD.fullmatch(text):
        v = float(text)
        if math.isinf(v) and "inf" not in text.lower():
            return text  # out of range: strtod sets ERANGE, rcl keeps the text
        return v
    return text


class _Loader(yaml.SafeLoader):
    pass


def _scalar(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    implicit = loader.resolve(yaml.ScalarNode, node.value, (True, False))
    explicit_str = node.tag == _STR_TAG and implicit != _STR_TAG
    return ros_scalar(node.value, quoted=node.style in ("'", '"') or explicit_str)


def _parse_value(value_node: yaml.Node, loader: yaml.SafeLoader, where: str) -> Any:
    if isinstance(value_node, yaml.ScalarNode):
        if value_node.style is None and value_node.value == "":
            raise ParameterError(f"{where}: no value")
        return _scalar(loader, value_node)
    if isinstance(value_node, yaml.SequenceNode):
        items = []
        for item in value_node.value:
            if not isinstance(item, yaml.ScalarNode):
                raise ParameterError(f"{where}: a list may hold only scalars")
            items.append(_scalar(loader, item))
        kinds = {bool if isinstance(v, bool) else type(v) for v in items}
        if len(kinds) > 1:
            raise ParameterError(f"{where}: a list must hold one type, got {items!r}")
        return items if items else None  # []: ROS has no type for it ("not set")
    raise ParameterError(f"{where}: not a value")


def _flatten(mapping: yaml.MappingNode, loader: yaml.SafeLoader, src: str, prefix: str,
             out: dict[str, tuple[Any, str]]) -> None:
    for key_node, value_node in mapping.value:
        name = prefix + str(key_node.value)
        where = f"{src}:{key_node.start_mark.line + 1}"
        if isinstance(value_node, yaml.MappingNode):
            _flatten(value_node, loader, src, name + ".", out)
        else:
            out[name] = (_parse_value(value_node, loader, f"{where}: {name}"), where)


def read_parameter_file(path: str | Path) -> dict[str, dict[str, tuple[Any, str]]]:
    """node name -> {parameter: (value as rcl reads it, "FILE:LINE")}. ParameterError with the
    file and line where the file is not YAML or not a ROS 2 parameter file."""
    src = str(path)
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ParameterError(f"{src}: cannot read the parameter file: {e.strerror or e}") from None
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
    except yaml.YAMLError as e:
        mark, ctx = getattr(e, "problem_mark", None), getattr(e, "context_mark", None)
        at = f"{src}:{mark.line + 1}:{mark.column + 1}" if mark is not None else src
        what = getattr(e, "problem", None) or str(e)
        if getattr(e, "context", None):
            what = f"{e.context}" + (f" (line {ctx.line + 1})" if ctx is not None else "") + f": {what}"
        raise ParameterError(f"{at}: not valid YAML: {what}") from None
    finally:
        loader.dispose()
    if root is None:
        return {}
    if not isinstance(root, yaml.MappingNode):
        raise ParameterError(f"{src}: not a ROS 2 parameter file (the top level must be a mapping of node names)")
    nodes: dict[str, dict[str, tuple[Any, str]]] = {}
    for key_node, body in root.value:
        node = str(key_node.value).lstrip("/")
        where = f"{src}:{key_node.start_mark.line + 1}"
        params = None
        if isinstance(body, yaml.MappingNode):
            params = next((v for k, v in body.value if k.value == "ros__parameters"), None)
        if not isinstance(params, yaml.MappingNode):
            raise ParameterError(f"{where}: {node}: no ros__parameters mapping")
        values: dict[str, tuple[Any, str]] = {}
        _flatten(params, loader, src, "", values)
        nodes.setdefault(node, {}).update(values)
    return nodes


def parse_override(node: str, text: str) -> tuple[str, Any, str]:
    """``name:=value`` of ``-p`` for ``node`` -> (name, value as rcl reads it, where)."""
    name, _, raw = text.partition(":=")
    where = f"-p {node}:{text}"
    try:
        loader = _Loader(raw)
        try:
            value_node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        raise ParameterError(f"{where}: not a value: {getattr(e, 'problem', None) or e}") from None
    if value_node is None:
        raise ParameterError(f"{where}: no value")
    return name, _parse_value(value_node, _Loader(""), where), where


def check_parameter_file(path: str | Path, configs: Mapping[str, type],
                         overrides: Mapping[str, Iterable[str]] | None = None,
                         known: Iterable[str] | None = None) -> list[str]:
    """Every problem of the parameter file ``path`` (and ``-p`` overrides, node ->
    ["name:=value", ...]) for the nodes of ``configs`` (node name -> config class), one line
    each, naming where, the node and the parameter; empty when they can start. A node of the
    file that is not ``known`` (default: those of ``configs``) is a problem too."""
    try:
        in_file = read_parameter_file(path)
    except ParameterError as e:
        return [str(e)]
    known = sorted(configs if known is None else known)
    lines = [f"{path}: {node}: unknown node; known: {known}" for node in in_file if node not in known]
    for node, cls in configs.items():
        merged = dict(in_file.get(node, {}))
        try:
            for text in (overrides or {}).get(node, ()):
                name, value, where = parse_override(node, text)
                merged[name] = (value, where)
        except ParameterError as e:
            lines.append(str(e))
            continue
        _, problems = check_values(cls, {k: v for k, (v, _) in merged.items()})
        for name, problem in problems:
            where = merged[name][1] if name in merged else str(path)
            text = problem if not name or name in problem else f"{name}: {problem}"
            lines.append(f"{where}: {node}: {text}")
    return lines
