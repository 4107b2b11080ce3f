"""Test-wide setup: every run talks ROS 2 only to itself.

Each pytest process gets its own ROS_DOMAIN_ID (from its pid) and localhost-only
discovery, so parallel runs (and other sessions on the machine) never hear each
other. This must happen before rclpy is imported anywhere.
"""

import os

os.environ["ROS_DOMAIN_ID"] = str(int(os.environ.get("L1FLOW_TEST_DOMAIN_ID", 1 + os.getpid() % 200)))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
# One intra-op thread: the models in tests are tiny, and OpenMP threads that spin at barriers
# stall for minutes when the cores are busy with other work (seen on a loaded 2-core machine).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (TensorRT / CUDA backends)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny networks on a shared 2-core machine: one torch thread (whatever OMP_NUM_THREADS
    says) avoids OpenMP spin contention. Modules opt in with ``pytestmark``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def ros_context():
    """An initialised rclpy context, shut down after the test."""
    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx)
    try:
        yield ctx
    finally:
        ctx.try_shutdown()
