"""ament_python setup for l1flow_ros (also installable with pip for development)."""

import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "l1flow_ros"

# One console script per node, named as the node; plus the `l1flow` command.
NODES = [
    "perception_node",
    "inference_node",
    "executor_node",
    "sim_robot_node",
    "panda_sim_node",
    "teleop_node",
    "recorder_node",
]


def _files(pattern: str) -> list[str]:
    return sorted(p for p in glob(pattern) if os.path.isfile(p))


def _model_bundles() -> list[tuple[str, list[str]]]:
    """Each bundled checkpoint is a directory models/<name>/ installed as is."""
    out = []
    for d in sorted(glob("models/*/")):
        name = os.path.basename(os.path.normpath(d))
        out.append((f"share/{PACKAGE}/models/{name}", _files(f"models/{name}/*")))
    return out


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "bench", "bench.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", _files("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", _files("config/*.yaml") + _files("config/*.xml")),
        (f"share/{PACKAGE}/config/security", _files("config/security/*.xml")),
        (f"share/{PACKAGE}/models", _files("models/*.md")),
    ]
    + _model_bundles(),
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="l1flow_ros maintainers",
    maintainer_email="maintainers@l1flow-ros.org",
    description="Fast generative robot policies (L1 Flow, one-step students) on a real arm with ROS 2.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [f"{n} = {PACKAGE}.nodes.{n}:main" for n in NODES]
        + [f"l1flow = {PACKAGE}.cli:main"],
    },
)
