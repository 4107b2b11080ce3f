"""The layout's promises, checked: the core never imports rclpy, node files stay thin, and
the executor's process does not carry torch."""

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import l1flow_ros

pytestmark = pytest.mark.core

CORE = ("perception", "policy", "inference", "control", "data", "sim", "msgs")
NODE_FILE_MAX_LINES = 350  # "about 300": parameters, topics, timers, thread wiring, main()


def _core_modules() -> list[str]:
    mods = ["l1flow_ros.spec", "l1flow_ros.config"]
    for p in CORE:
        pkg = importlib.import_module(f"l1flow_ros.{p}")
        mods.append(pkg.__name__)
        mods += [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
    return mods


def _imports_after(modules: list[str], probe: str) -> str:
    """The first of ``modules`` after whose import ``probe`` is in sys.modules, in a fresh
    interpreter ('' if none)."""
    code = (f"import sys\nfor m in {modules!r}:\n    __import__(m)\n"
            f"    if {probe!r} in sys.modules:\n        print(m)\n        break\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_the_core_never_imports_rclpy():
    mods = _core_modules()
    assert len(mods) > 40  # the walk found the packages
    assert _imports_after(mods, "rclpy") == ""


@pytest.mark.parametrize("node", ["executor_node"])
def test_the_executor_process_does_not_import_torch(node):
    """The 500 Hz process stays small: torch is ~0.3 GB and seconds of import."""
    assert _imports_after([f"l1flow_ros.nodes.{node}"], "torch") == ""


def test_node_files_are_thin():
    nodes = Path(l1flow_ros.__file__).parent / "nodes"
    sizes = {f.name: len(f.read_text().splitlines()) for f in nodes.glob("*_node.py")}
    assert len(sizes) == 7
    fat = {k: v for k, v in sizes.items() if v > NODE_FILE_MAX_LINES}
    assert not fat, f"node files over {NODE_FILE_MAX_LINES} lines: {fat}"
