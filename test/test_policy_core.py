"""Policy core: networks, samplers (analytic cases), normaliser, bundles, ONNX export."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from l1flow_ros.perception.encoders import EncoderConfig, ObservationEncoder
from l1flow_ros.policy.bundle import (
    FORMAT_VERSION,
    BundleError,
    add_files,
    load_bundle,
    make_manifest,
    read_manifest,
    save_bundle,
)
from l1flow_ros.policy.methods import diffusion, fm, l1flow, ofp
from l1flow_ros.policy.model import ModelConfig, PolicyModel
from l1flow_ros.policy.normalizer import Normalizer
from l1flow_ros.policy.unet import ConditionalUnet1D, UnetConfig
from l1flow_ros.spec import ActionSpec, ObservationSpec, SamplerSpec

pytestmark = pytest.mark.core

TINY_ENC = EncoderConfig(
    image_channels=(8, 16),
    image_keypoints=8,
    image_feature_dim=16,
    point_hidden=(16, 32),
    point_feature_dim=16,
    proprio_hidden=16,
    proprio_feature_dim=8,
    out_dim=32,
)
TINY_UNET = UnetConfig(down_dims=(16, 32), time_embed_dim=16)
OBS_ALL = ObservationSpec(
    cameras=("front", "wrist"),
    image_size=(24, 32),
    num_points=64,
    point_color=True,
    proprio_names=("ee_x", "ee_y", "ee_z", "gripper"),
    n_obs_steps=2,
)
ACT = ActionSpec(names=("ee_x", "ee_y", "ee_z", "gripper"), horizon=8, n_action_steps=4, dt=0.1)


def tiny_model(kind: str = "l1flow", obs: ObservationSpec = OBS_ALL, **sampler_kw) -> PolicyModel:
    from l1flow_ros.policy.model import prediction_for

    torch.manual_seed(0)
    sampler = SamplerSpec(kind=kind, **sampler_kw)
    cfg = ModelConfig(prediction=prediction_for(kind), encoder=TINY_ENC, unet=TINY_UNET)
    return PolicyModel(obs, ACT, sampler, cfg).eval()


def random_obs(model: PolicyModel, batch: int = 3, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.rand(s, generator=g) for k, s in model.encoder.input_shapes(batch).items()}


# ---------------------------------------------------------------- networks


def test_encoder_all_modalities_and_subsets():
    for spec in (
        OBS_ALL,
        dataclasses.replace(OBS_ALL, num_points=0),
        dataclasses.replace(OBS_ALL, cameras=(), point_color=False),
        ObservationSpec(proprio_names=("a",)),
    ):
        enc = ObservationEncoder(spec, TINY_ENC)
        obs = {k: torch.rand(s) for k, s in enc.input_shapes(5).items()}
        out = enc(obs)
        assert out.shape == (5, TINY_ENC.out_dim) and torch.isfinite(out).all()
        assert enc(obs).equal(enc.forward_tensors(*(obs[k] for k in enc.input_names)))
    with pytest.raises(ValueError, match="no modality"):
        ObservationEncoder(ObservationSpec(), TINY_ENC)
    with pytest.raises(KeyError):
        ObservationEncoder(OBS_ALL, TINY_ENC)({"proprio": torch.zeros(1, 2, 4)})


def test_encoder_uses_every_view():
    enc = ObservationEncoder(dataclasses.replace(OBS_ALL, num_points=0, proprio_names=()), TINY_ENC).eval()
    obs = {"rgb": torch.rand(enc.input_shapes(2)["rgb"])}
    base = enc(obs)
    for v in range(2):
        changed = obs["rgb"].clone()
        changed[:, :, v] = torch.rand_like(changed[:, :, v])
        assert not torch.allclose(enc({"rgb": changed}), base)


def test_unet_shapes_and_conditioning():
    net = ConditionalUnet1D(3, 10, TINY_UNET)
    x, t, c = torch.randn(4, 8, 3), torch.rand(4), torch.randn(4, 10)
    y = net(x, t, c)
    assert y.shape == (4, 8, 3)
    assert not torch.allclose(net(x, t, torch.randn(4, 10)), y)
    assert not torch.allclose(net(x, torch.rand(4), c), y)
    with pytest.raises(ValueError, match="multiple"):
        PolicyModel(OBS_ALL, dataclasses.replace(ACT, horizon=7), SamplerSpec(), ModelConfig(unet=TINY_UNET))


def test_flow_map_student_starts_as_teacher():
    torch.manual_seed(0)
    teacher = ConditionalUnet1D(3, 10, TINY_UNET)
    student = ConditionalUnet1D(3, 10, dataclasses.replace(TINY_UNET, two_times=True))
    missing = student.load_state_dict(teacher.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("r_embed") for k in missing)
    x, t, c = torch.randn(2, 8, 3), torch.rand(2), torch.randn(2, 10)
    assert torch.allclose(student(x, t, c, torch.rand(2)), teacher(x, t, c), atol=1e-6)


# ---------------------------------------------------------------- samplers, analytic


class FixedChunk(nn.Module):
    """Predicts the same clean chunk whatever the input."""

    def __init__(self, chunk: torch.Tensor) -> None:
        super().__init__()
        self.chunk = chunk
        self.calls: list[float] = []

    def forward(self, x, t, cond, r=None):
        self.calls.append(float(t[0]))
        return self.chunk.expand_as(x)


class ConstantVelocity(nn.Module):
    def __init__(self, v: torch.Tensor) -> None:
        super().__init__()
        self.v = v

    def forward(self, x, t, cond, r=None):
        return self.v.expand_as(x)


class ExactEpsilon(nn.Module):
    """The epsilon that a data point ``x0`` implies, given x_k: what a perfect network outputs."""

    def __init__(self, x0: torch.Tensor, num_train_steps: int) -> None:
        super().__init__()
        self.x0, self.k = x0, num_train_steps
        self.ac = diffusion.cosine_alphas_cumprod(num_train_steps)

    def forward(self, x, t, cond, r=None):
        a = self.ac[int(round(float(t[0]) * self.k))]
        return (x - a.sqrt() * self.x0) / (1 - a).sqrt()


CHUNK = torch.linspace(-1, 1, 8 * 2).reshape(1, 8, 2)


def test_two_step_returns_the_predicted_chunk_exactly():
    net = FixedChunk(CHUNK)
    noise = torch.randn(5, 8, 2)
    out = l1flow.two_step(net, torch.zeros(5, 1), noise, t1=0.3)
    assert torch.equal(out, CHUNK.expand(5, 8, 2))
    assert net.calls == [0.0, pytest.approx(0.3)]
    # Warm-started: still exactly the chunk, first call at t_w.
    net.calls.clear()
    out = l1flow.two_step(
        net, torch.zeros(5, 1), noise, 0.8, warm=torch.zeros_like(noise), warm_t=0.5
    )
    assert torch.equal(out, CHUNK.expand(5, 8, 2)) and net.calls == [0.5, pytest.approx(0.8)]


def test_two_step_second_input_is_on_the_path():
    seen = []

    class Spy(FixedChunk):
        def forward(self, x, t, cond, r=None):
            seen.append(x.clone())
            return super().forward(x, t, cond)

    noise = torch.randn(2, 8, 2)
    l1flow.two_step(Spy(CHUNK), torch.zeros(2, 1), noise, t1=0.25)
    assert torch.equal(seen[0], noise)
    assert torch.allclose(seen[1], noise + 0.25 * (CHUNK - noise))


@pytest.mark.parametrize("steps", [1, 3, 10])
def test_l1flow_euler_lands_on_the_predicted_chunk(steps):
    out = l1flow.euler(FixedChunk(CHUNK), torch.zeros(3, 1), torch.randn(3, 8, 2), steps)
    assert torch.allclose(out, CHUNK.expand(3, 8, 2), atol=1e-5)


def test_constant_velocity_integrates_exactly():
    v = torch.randn(1, 8, 2)
    noise = torch.randn(4, 8, 2)
    for steps in (1, 7, 10):
        out = fm.euler(ConstantVelocity(v), torch.zeros(4, 1), noise, steps)
        assert torch.allclose(out, noise + v, atol=1e-5)
    warm = torch.randn(4, 8, 2)
    out = fm.euler(ConstantVelocity(v), torch.zeros(4, 1), noise, 5, warm=warm, warm_t=0.6)
    assert torch.allclose(out, 0.4 * noise + 0.6 * warm + 0.4 * v, atol=1e-5)
    out = ofp.flow_map_one_step(ConstantVelocity(v), torch.zeros(4, 1), noise)
    assert torch.allclose(out, noise + v, atol=1e-6)
    out = ofp.flow_map_steps(ConstantVelocity(v), torch.zeros(4, 1), noise, 4)
    assert torch.allclose(out, noise + v, atol=1e-5)


def test_ddim_and_ddpm_recover_the_data_point_with_a_perfect_network():
    x0 = CHUNK * 0.9
    net = ExactEpsilon(x0, 100)
    out = diffusion.ddim(net, torch.zeros(2, 1), torch.randn(2, 8, 2), steps=10, num_train_steps=100)
    assert torch.allclose(out, x0.expand(2, 8, 2), atol=1e-4)
    out = diffusion.ddpm(net, torch.zeros(2, 1), torch.randn(2, 100, 8, 2), num_train_steps=100)
    assert torch.allclose(out, x0.expand(2, 8, 2), atol=1e-4)


def test_cosine_schedule_shape():
    ac = diffusion.cosine_alphas_cumprod(100)
    assert ac.shape == (100,) and ac[0] > 0.99 and ac[-1] < 1e-3
    assert torch.all(ac[1:] < ac[:-1])


ALL_KINDS = [
    ("l1flow", {}),
    ("l1flow", {"steps": 4}),
    ("fm", {"steps": 10}),
    ("ddim", {"steps": 10}),
    ("ddpm", {"steps": 100}),
    ("imle", {"steps": 1}),
    ("ofp", {"steps": 1}),
    ("regression", {"steps": 1}),
]


@pytest.mark.parametrize(("kind", "kw"), ALL_KINDS)
def test_same_noise_same_chunk(kind, kw):
    model = tiny_model(kind, **kw)
    obs = random_obs(model)
    noise = torch.randn(model.noise_shape(3), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a = model(obs, noise)
        b = model(obs, noise.clone())
        c = model(obs, torch.randn(model.noise_shape(3)))
    assert a.shape == (3, ACT.horizon, ACT.dim)
    assert torch.equal(a, b)
    assert torch.isfinite(a).all()
    if kind != "regression":
        assert not torch.allclose(a, c)
    else:
        assert torch.equal(a, c)  # regression ignores the noise


def test_sampler_and_prediction_must_match():
    with pytest.raises(ValueError, match="cannot be sampled"):
        PolicyModel(OBS_ALL, ACT, SamplerSpec(kind="fm"), ModelConfig(prediction="sample", unet=TINY_UNET))
    m = tiny_model("ddim", steps=10)
    assert m.with_sampler(SamplerSpec(kind="ddpm", steps=100)).noise_shape(2) == (2, 100, 8, 4)
    with pytest.raises(ValueError):
        m.with_sampler(SamplerSpec(kind="ddim", steps=7))
    with pytest.raises(ValueError, match="warm"):
        m.sample(torch.zeros(1, 32), torch.zeros(1, 8, 4), warm=torch.zeros(1, 8, 4))


def test_warm_start_changes_the_chunk():
    model = tiny_model("ofp", steps=1, warm_start=True, warm_start_t=0.5)
    cond = model.encode(random_obs(model, 2))
    noise = torch.randn(2, 8, 4)
    with torch.no_grad():
        cold = model.sample(cond, noise)
        w1 = model.sample(cond, noise, torch.zeros(2, 8, 4))
        w2 = model.sample(cond, noise, torch.ones(2, 8, 4))
    assert not torch.allclose(w1, w2) and not torch.allclose(cold, w1)


# ---------------------------------------------------------------- normaliser


def test_normalizer_round_trip_and_constant_dims():
    rng = np.random.default_rng(0)
    actions = rng.uniform(-3, 5, size=(200, 3))
    actions[:, 2] = 0.7  # a dimension that never moves
    proprio = rng.normal(2.0, 0.5, size=(200, 2))
    n = Normalizer.from_data(actions, proprio)
    na = n.normalize_action(actions)
    assert na.dtype == np.float32
    assert np.allclose(na[:, :2].min(0), -1, atol=1e-6) and np.allclose(na[:, :2].max(0), 1, atol=1e-6)
    assert np.allclose(na[:, 2], 0)
    assert np.allclose(n.unnormalize_action(na), actions, atol=1e-5)
    npro = n.normalize_proprio(proprio)
    assert np.allclose(npro.mean(0), 0, atol=1e-5) and np.allclose(npro.std(0), 1, atol=1e-4)
    n2 = Normalizer.from_dict(json.loads(json.dumps(n.to_dict())))
    assert np.allclose(n2.normalize_action(actions), na)
    with pytest.raises(ValueError, match="last dimension"):
        n.normalize_action(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        Normalizer([0.0, np.nan], [1.0, 1.0])
    with pytest.raises(ValueError):
        Normalizer.from_dict({"action_min": [0]})


# ---------------------------------------------------------------- bundles


def _norm() -> Normalizer:
    return Normalizer([-1, -1, 0, -1], [1, 1, 0.5, 1], [0.0] * 4, [1.0, 2.0, 0.5, 1.0])


def _saved(tmp_path, kind="l1flow", **kw):
    model = tiny_model(kind, **kw)
    fp = save_bundle(tmp_path / "b", model, make_manifest(model, _norm(), {"note": "test"}))
    return model, fp, tmp_path / "b"


def test_bundle_round_trip_same_output(tmp_path):
    model, fp, d = _saved(tmp_path, "fm", steps=5)
    m, loaded = load_bundle(d)
    assert m.fingerprint == fp and len(fp) == 16 and m.format_version == FORMAT_VERSION
    assert m.observation == model.obs_spec and m.action == model.action_spec and m.sampler == model.sampler
    assert m.model == model.cfg and m.train == {"note": "test"}
    obs = random_obs(model)
    noise = torch.randn(3, 8, 4)
    with torch.no_grad():
        assert torch.equal(model(obs, noise), loaded(obs, noise))
    # Same contents -> same fingerprint; changed weights -> another one.
    assert save_bundle(tmp_path / "c", model, make_manifest(model, _norm(), {"note": "test"})) == fp
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    assert save_bundle(tmp_path / "c", model, make_manifest(model, _norm(), {"note": "test"})) != fp


def test_add_files_refreshes_fingerprint(tmp_path):
    _, fp, d = _saved(tmp_path)
    (d / "policy.onnx").write_bytes(b"graph")
    fp2 = add_files(d, ["policy.onnx"])
    assert fp2 != fp and read_manifest(d).fingerprint == fp2
    (d / "policy.onnx").write_bytes(b"other graph")
    with pytest.raises(BundleError, match="fingerprint"):
        read_manifest(d)


def _edit_manifest(d, fn):
    p = d / "manifest.json"
    m = json.loads(p.read_text())
    fn(m)
    p.write_text(json.dumps(m))


def test_bundle_errors(tmp_path):
    model, _, d = _saved(tmp_path)
    with pytest.raises(BundleError, match="not a directory"):
        read_manifest(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="no manifest"):
        read_manifest(tmp_path / "empty")

    def fresh(name):
        _, _, b = _saved(tmp_path / name)
        return b

    b = fresh("corrupt")
    (b / "manifest.json").write_text('{"format_version": 1, "observ')
    with pytest.raises(BundleError, match="corrupt"):
        read_manifest(b)
    b = fresh("newer")
    _edit_manifest(b, lambda m: m.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(BundleError, match="newer"):
        load_bundle(b)
    b = fresh("unknown")
    _edit_manifest(b, lambda m: m.update(colour="blue"))
    with pytest.raises(BundleError, match="unknown fields"):
        read_manifest(b)
    b = fresh("unknown_nested")
    _edit_manifest(b, lambda m: m["action"].update(colour="blue"))
    with pytest.raises(BundleError, match="unknown fields"):
        read_manifest(b)
    b = fresh("missing")
    (b / "weights.safetensors").unlink()
    with pytest.raises(BundleError, match="missing weights.safetensors"):
        load_bundle(b)
    b = fresh("tampered")
    _edit_manifest(b, lambda m: m["action"].update(dt=0.2))
    with pytest.raises(BundleError, match="fingerprint"):
        read_manifest(b)
    b = fresh("dims")
    _edit_manifest(b, lambda m: m["normalizer"].update(action_min=[0, 0, 0], action_max=[1, 1, 1]))
    with pytest.raises(BundleError, match="action dims"):
        read_manifest(b)


def test_non_finite_weights_rejected(tmp_path):
    model = tiny_model()
    with torch.no_grad():
        next(model.head.parameters())[0] = math.nan
    d = tmp_path / "nan"
    save_bundle(d, model, make_manifest(model, _norm()))
    with pytest.raises(BundleError, match="non-finite"):
        read_manifest(d)
    with pytest.raises(BundleError, match="non-finite"):
        load_bundle(d)


def test_resave_drops_stale_exports(tmp_path):
    model, _, d = _saved(tmp_path)
    (d / "policy.onnx").write_bytes(b"old")
    add_files(d, ["policy.onnx"])
    save_bundle(d, model, make_manifest(model, _norm()))
    assert not (d / "policy.onnx").exists()
    read_manifest(d)


# ---------------------------------------------------------------- ONNX export


@pytest.mark.parametrize(
    ("kind", "kw", "warm"), [("l1flow", {}, False), ("ofp", {"steps": 1, "warm_start": True}, True)]
)
def test_graphs_export_to_onnx_and_match(tmp_path, kind, kw, warm):
    import onnxruntime as ort

    model = tiny_model(kind, **kw)
    obs = random_obs(model, 2)
    names = model.encoder.input_names
    enc_path, pol_path = tmp_path / "encoder.onnx", tmp_path / "policy.onnx"
    dyn = {n: {0: "batch"} for n in (*names, "cond", "noise", "warm", "actions")}
    torch.onnx.export(
        model.encoder_graph(),
        tuple(obs[k] for k in names),
        str(enc_path),
        input_names=list(names),
        output_names=["cond"],
        dynamic_axes={k: dyn[k] for k in (*names, "cond")},
        dynamo=False,
        opset_version=17,
    )
    cond = model.encode(obs).detach()
    noise = torch.randn(2, 8, 4)
    args = (cond, noise, torch.rand(2, 8, 4)) if warm else (cond, noise)
    in_names = ["cond", "noise", "warm"][: len(args)]
    torch.onnx.export(
        model.policy_graph(),
        args,
        str(pol_path),
        input_names=in_names,
        output_names=["actions"],
        dynamic_axes={k: dyn[k] for k in (*in_names, "actions")},
        dynamo=False,
        opset_version=17,
    )
    enc = ort.InferenceSession(str(enc_path), providers=["CPUExecutionProvider"])
    pol = ort.InferenceSession(str(pol_path), providers=["CPUExecutionProvider"])
    got_cond = enc.run(None, {k: obs[k].numpy() for k in names})[0]
    assert np.allclose(got_cond, cond.numpy(), atol=1e-4)
    got = pol.run(None, {n: a.numpy() for n, a in zip(in_names, args)})[0]
    with torch.no_grad():
        want = model.sample(*args)
    assert np.allclose(got, want.numpy(), atol=1e-4)
