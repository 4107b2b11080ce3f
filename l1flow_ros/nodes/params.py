"""One way to give a node its parameters: from its frozen config dataclass.

A node's configuration is a frozen dataclass (ROS-free, next to the engine it configures);
each field is declared with :func:`l1flow_ros.config.param`, which holds its default, its description and
whether it may change while the node runs. :func:`declare` declares every field as a ROS
parameter and returns the validated config; :class:`LiveParameters` takes live changes:

    @dataclass(frozen=True)
    class SimConfig:
        task: str = param("button-press-v3", "Meta-World v3 task")
        cameras: tuple[str, ...] = param((), "cameras to render (empty = none)")
        camera_rate_hz: float = param(10.0, "camera frame rate (Hz)", live=True)

        def validate(self) -> None:          # raises ValueError with the reason
            if not self.camera_rate_hz > 0:
                raise ValueError("camera_rate_hz must be > 0")

    class SimNode(Node):
        def __init__(self):
            super().__init__("sim")
            self.cfg = declare(self, SimConfig)          # raises ParameterError
            self._live = LiveParameters(self, self._on_config)

        def _on_config(self, old: SimConfig, new: SimConfig) -> None: ...

The conventions, the same for every node:

- **Types** come from the field annotations: ``str``, ``bool``, ``int``, ``float`` and
  ``tuple[str | int | float, ...]`` (ROS arrays). Parameter files may write ``500`` for a
  ``float`` and ``[1, 2]`` for a ``tuple[float, ...]``; anything else of the wrong type is
  an error naming the parameter, the type it wants and the value it got.
- **Empty lists**: ``[]`` in a parameter file (which ROS reads as "not set") and ``[""]``
  (the form ROS tools write) both mean an empty tuple.
- **Grouped names** such as ``joy.axes`` (a field name cannot hold a dot): a field
  ``joy_axes`` declared with ``param(..., name="joy.axes")``; messages use the ROS name.
- **Read-only** unless ``live=True``: the descriptor says so, and ROS itself refuses to set
  it while the node runs.
- **Validation** is the dataclass's ``validate()`` (a ``ValueError``), the one place for it:
  at start-up a failure raises :class:`ParameterError` (the node does not start with a bad
  file); a live change that fails it is refused with the reason, and the node keeps its
  configuration.
- **Unknown names** in the node's parameter file or ``-p`` overrides (a misspelt
  ``max_velocty``) are refused at start too, with the closest known name: rclpy itself
  ignores an override nobody declares, so a typo would silently leave the default in force.
- **At start, no traceback**: a node's ``main()`` builds it inside
  :func:`refuse_bad_parameters`, so a :class:`ParameterError` is one FATAL line naming the
  node, the parameter file(s) and each parameter at fault, and the process exits with
  :data:`EXIT_BAD_PARAMETERS`. ``l1flow run`` checks the same before starting anything
  (:func:`l1flow_ros.config.check_parameter_file`); this is the check for ``ros2 launch``.
- Parameters are declared dynamically typed (so that the coercions above can happen here
  and not fail inside rclpy); the type is written at the start of each description, as
  ``ros2 param describe`` shows it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Callable, Iterator
from typing import Any

import rclpy.logging
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter

from l1flow_ros.config import (
    ParameterError,
    coerce,
    is_ros_own,
    param,
    param_name,
    type_name,
    unknown_parameter,
    validated,
    with_changes,
)

__all__ = ["EXIT_BAD_PARAMETERS", "LiveParameters", "ParameterError", "declare", "param", "refuse_bad_parameters"]

EXIT_BAD_PARAMETERS = 2  # a node's exit code when its parameters keep it from starting


def parameter_files(argv: list[str] | None = None) -> list[str]:
    """The ``--params-file`` arguments of this process's ROS arguments (what a message names)."""
    argv = sys.argv if argv is None else argv
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--params-file"]


@contextlib.contextmanager
def refuse_bad_parameters(logger: str = "l1flow") -> Iterator[None]:
    """Around a node's construction in ``main()``: a :class:`ParameterError` becomes one FATAL
    log line and exit code :data:`EXIT_BAD_PARAMETERS`, never a traceback."""
    try:
        yield
    except ParameterError as e:
        rclpy.logging.get_logger(logger).fatal(str(e).replace("\n", "; "))
        raise SystemExit(EXIT_BAD_PARAMETERS) from None


def _to_ros(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value) if value else None  # an empty array is "not set" to ROS
    return value


def declare(node: Node, cls: type) -> Any:
    """Declare every field of the frozen dataclass ``cls`` on ``node`` and return the config
    built from the node's parameters (file, ``-p`` overrides, defaults), validated.
    Raises :class:`ParameterError` naming every parameter that does not fit, and every name of
    the node's parameter file or overrides that is not one of its parameters."""
    values, errors = {}, []
    fields = {param_name(f) for f in dataclasses.fields(cls)}
    # rclpy keeps the file's and -p values for this node here, declared or not.
    overrides = getattr(node, "_parameter_overrides", None) or {}
    for name in overrides:
        if name not in fields and not is_ros_own(name) and not node.has_parameter(name):
            errors.append(unknown_parameter(name, fields))
    for f in dataclasses.fields(cls):
        desc = ParameterDescriptor(
            description=f"[{type_name(cls, f)}] {f.metadata.get('description', '')}",
            read_only=not f.metadata.get("live", False),
            dynamic_typing=True,
        )
        value = node.declare_parameter(param_name(f), _to_ros(f.default), desc).value
        try:
            values[f.name] = coerce(cls, f, value)
        except TypeError as e:
            errors.append(str(e))
    files = parameter_files()
    where = f" in {', '.join(files)}" if files else ""
    if errors:
        raise ParameterError(f"{node.get_name()}: bad parameters{where}: " + "; ".join(errors))
    try:
        return validated(cls(**values))
    except (ValueError, TypeError) as e:
        raise ParameterError(f"{node.get_name()}: bad parameters{where}: {e}") from None


class LiveParameters:
    """Live parameter changes of a node whose config came from :func:`declare`.

    A change is checked against the config (:func:`with_changes`) before rclpy accepts it,
    and refused with the reason when it does not fit; once accepted, ``node.cfg`` is the new
    config and ``on_change(old, new)`` runs (on the thread that handled the request).
    """

    def __init__(self, node: Node, on_change: Callable[[Any, Any], None] | None = None) -> None:
        self._node = node
        self._on_change = on_change
        self._pending: Any = None
        node.add_on_set_parameters_callback(self._check)
        node.add_post_set_parameters_callback(self._apply)

    def _check(self, params: list[Parameter]) -> SetParametersResult:
        try:
            self._pending = with_changes(self._node.cfg, {p.name: p.value for p in params})
        except ValueError as e:
            self._pending = None
            return SetParametersResult(successful=False, reason=str(e))
        return SetParametersResult(successful=True)

    def _apply(self, params: list[Parameter]) -> None:
        new, self._pending = self._pending, None
        if new is None or new is self._node.cfg:
            return
        old, self._node.cfg = self._node.cfg, new
        if self._on_change is not None:
            self._on_change(old, new)
