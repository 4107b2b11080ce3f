"""Objectives, LR schedule, and the training loop end to end: store -> bundle, resume,
distillation, and DDP over two CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from l1flow_ros.cli import main as cli_main
from l1flow_ros.data.store import StoreWriter
from l1flow_ros.policy import objectives as O
from l1flow_ros.policy.bundle import load_bundle, read_manifest
from l1flow_ros.policy.config import FlowTimeConfig
from l1flow_ros.policy.methods import fm, imle, l1flow, ofp, regression
from l1flow_ros.policy.train import STATE_FILE, lr_at
from l1flow_ros.spec import ActionSpec, ObservationSpec

pytestmark = pytest.mark.core

# ---------------------------------------------------------------- objectives


class Oracle(nn.Module):
    """Knows the data chunk x1: returns it (sample), or the exact velocity / noise."""

    def __init__(self, x1: torch.Tensor, kind: str) -> None:
        super().__init__()
        self.x1, self.kind = x1, kind

    def forward(self, x, t, cond, r=None):
        tt = t[:, None, None]
        if self.kind == "sample":
            return self.x1.expand_as(x)
        return (self.x1 - x) / (1 - tt)  # the velocity that reaches x1 at t = 1


def test_losses_vanish_for_a_perfect_network():
    x1 = torch.rand(1, 8, 3).expand(64, 8, 3) * 2 - 1
    cond = torch.zeros(64, 4)
    cfg = FlowTimeConfig()
    assert l1flow.loss(Oracle(x1, "sample"), cond, x1, cfg) == 0
    assert fm.loss(Oracle(x1, "velocity"), cond, x1, cfg) < 1e-8
    assert regression.loss(Oracle(x1, "sample"), cond, x1) == 0
    # A wrong network is penalised.
    assert l1flow.loss(Oracle(-x1, "sample"), cond, x1, cfg) > 0.1


def test_time_distribution():
    like = torch.zeros(1)
    g = torch.Generator().manual_seed(0)
    t = O.sample_t(20000, FlowTimeConfig(uniform_share=0.0), like, g)
    assert 0 < float(t.min()) and float(t.max()) < 1
    assert abs(float(torch.logit(t).mean())) < 0.05 and abs(float(torch.logit(t).std()) - 1) < 0.05
    tu = O.sample_t(20000, FlowTimeConfig(uniform_share=0.5), like, g)
    # The uniform share puts mass at the ends, where the logit-normal has almost none.
    assert float((tu < 0.02).float().mean()) > 5 * float((t < 0.02).float().mean())


def test_chamfer_rewards_covering_every_mode():
    a = torch.cat([torch.full((1, 4, 8, 2), 1.0), torch.full((1, 4, 8, 2), -1.0)], dim=1)  # two modes
    both = a[:, [0, 5]]
    one = a[:, [0, 1]]
    middle = torch.zeros(1, 2, 8, 2)
    assert imle.chamfer(a, both) < 1e-6
    assert imle.chamfer(a, one) > 1.0 and imle.chamfer(a, middle) > 1.0
    assert imle.chamfer(a, both) < imle.chamfer(a, one)


def test_warm_tail():
    x1 = torch.arange(6.0).reshape(1, 6, 1)
    assert ofp.warm_tail(x1, 2)[0, :, 0].tolist() == [0, 1, 2, 3, 3, 3]
    assert ofp.warm_tail(x1, 0).equal(x1)


def test_lr_schedule():
    lrs = [lr_at(s, 1.0, 10, 100, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # cosine never goes up
    assert lr_at(100, 1.0, 10, 100, 0.1) == pytest.approx(0.1)
    assert lrs[55] == pytest.approx(0.55, abs=1e-6)  # half way: (0.1 + 1) / 2


def test_ofp_and_imle_losses_train_the_student():
    from l1flow_ros.policy.unet import ConditionalUnet1D, UnetConfig

    torch.manual_seed(0)
    cfg = UnetConfig(down_dims=(16,), time_embed_dim=16, two_times=True)
    net, target = ConditionalUnet1D(2, 4, cfg), ConditionalUnet1D(2, 4, cfg)
    x1, cond = torch.rand(16, 8, 2), torch.randn(16, 4)
    loss = ofp.loss(net, target, cond, x1, ofp.OfpConfig(shift=2), FlowTimeConfig())
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in net.parameters())
    assert all(p.grad is None for p in target.parameters())
    student = ConditionalUnet1D(2, 4, UnetConfig(down_dims=(16,), time_embed_dim=16))
    loss = imle.loss(student, cond[:4], torch.rand(4, 3, 8, 2), imle.ImleConfig(3, 5))
    loss.backward()
    assert torch.isfinite(loss)


# ---------------------------------------------------------------- end to end

OBS = ObservationSpec(
    cameras=("front",), image_size=(16, 16), proprio_names=("ee_x", "ee_y", "ee_z", "gripper")
)
ACT = ActionSpec(names=("ee_x", "ee_y", "ee_z", "gripper"), horizon=8, n_action_steps=4, dt=0.1)
LOOP = ["--batch-size", "8", "--no-progress", "--warmup-steps", "2", "--log-every", "1"]
TINY = ["--down-dims", "16,32", "--embed-dim", "32", *LOOP]


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: the test machine's cores are shared, more threads only contend."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "demo.zarr"
    rng = np.random.default_rng(0)
    with StoreWriter(path, OBS, ACT) as w:
        for _ in range(3):
            t = 12
            ee = np.cumsum(rng.normal(0, 0.01, size=(t + 1, 4)), axis=0)
            w.add_episode(
                {"rgb": rng.integers(0, 256, size=(t, 1, 3, 16, 16), dtype=np.uint8), "proprio": ee[:-1]},
                ee[1:],  # absolute targets: the next pose
            )
    return path


def _log(out):
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_train_resume_and_distill_from_a_store(store, tmp_path):
    out = tmp_path / "fm"
    args = ["train", "--objective", "fm", "--data", str(store), "--out", str(out), *TINY]
    assert cli_main([*args, "--steps", "6", "--save-every", "3"]) == 0
    m, model = load_bundle(out)
    assert m.sampler.kind == "fm" and m.train["step"] == 6 and m.train["train"]["objective"] == "fm"
    assert m.observation == OBS and m.action == ACT and model.encoder.use_rgb
    assert torch.load(out / STATE_FILE, weights_only=False)["step"] == 6
    # Resume: continues at step 6 up to 9, does not start over.
    assert cli_main([*args, "--steps", "9", "--resume"]) == 0
    steps = [r["step"] for r in _log(out)]
    m = read_manifest(out)
    assert m.train["step"] == 9 and steps[-1] == 9 and steps.count(1) == 1
    # Distil both students from it.
    for method in ("imle", "ofp"):
        sout = tmp_path / method
        assert cli_main(
            ["distill", "--method", method, "--teacher", str(out), "--data", str(store), "--out", str(sout),
             *LOOP, "--steps", "3", "--teacher-samples", "2", "--student-samples", "2"]
        ) == 0  # fmt: skip
        sm, student = load_bundle(sout)
        assert sm.sampler.kind == method and sm.train["teacher"] == m.fingerprint
        assert sm.normalizer == m.normalizer
        obs = {"rgb": torch.rand(2, 1, 1, 3, 16, 16), "proprio": torch.randn(2, 1, 4)}
        with torch.no_grad():
            a = student(obs, torch.randn(student.noise_shape(2)))
        assert a.shape == (2, 8, 4) and torch.isfinite(a).all()
    assert read_manifest(tmp_path / "ofp").sampler.warm_start


def test_l1flow_loss_goes_down(store, tmp_path):
    out = tmp_path / "l1"
    args = ["train", "--objective", "l1flow", "--data", str(store), "--out", str(out), *TINY]
    assert cli_main([*args, "--steps", "40", "--lr", "3e-3"]) == 0
    losses = [r["loss"] for r in _log(out)]
    assert np.mean(losses[-8:]) < 0.85 * np.mean(losses[:4])


def test_ddp_two_cpu_processes(store, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "l1flow_ros.cli", "train", "--objective", "l1flow", "--data", str(store), "--out", str(out),
        *TINY, "--steps", "4", "--device", "cpu",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = read_manifest(out)
    assert m.train["world_size"] == 2 and m.train["step"] == 4


@pytest.mark.gpu
def test_diffusion_policy_size_trains_on_cuda_bf16():
    from l1flow_ros.policy.model import ModelConfig, PolicyModel
    from l1flow_ros.policy.unet import UNET_DP
    from l1flow_ros.spec import SamplerSpec

    model = PolicyModel(OBS, ACT, SamplerSpec(), ModelConfig(unet=UNET_DP)).cuda()
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    obs = {
        "rgb": torch.rand(8, 1, 1, 3, 16, 16, device="cuda"),
        "proprio": torch.randn(8, 1, 4, device="cuda"),
    }
    x1 = torch.rand(8, 8, 4, device="cuda") * 2 - 1
    losses = []
    for _ in range(5):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = l1flow.loss(model.head, model.encode(obs), x1, FlowTimeConfig())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    with torch.no_grad():
        a = model(obs, torch.randn(8, 8, 4, device="cuda"))
    assert a.shape == (8, 8, 4) and torch.isfinite(a).all()


def test_random_shift_moves_whole_images_consistently_over_history():
    from l1flow_ros.policy.train import random_shift

    rgb = torch.zeros(16, 2, 2, 3, 12, 12)
    rgb[..., 6, 6] = 1.0  # one bright pixel in every frame, view and channel
    g = torch.Generator().manual_seed(0)
    out = random_shift(rgb, 3, g)
    assert out.shape == rgb.shape and torch.equal(random_shift(rgb, 0), rgb)
    moved = set()
    for b in range(16):
        for v in range(2):
            pos = [tuple((out[b, t, v, 0] == 1).nonzero()[0].tolist()) for t in range(2)]
            assert pos[0] == pos[1]  # the same shift for the whole history
            assert abs(pos[0][0] - 6) <= 3 and abs(pos[0][1] - 6) <= 3
            moved.add(pos[0])
    assert len(moved) > 1
