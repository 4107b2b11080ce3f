"""Observation encoder: camera images, point clouds and proprioception -> one embedding.

Input (batched, B first; see :class:`l1flow_ros.spec.ObservationSpec`):
  - ``rgb``:     (B, To, V, 3, H, W) float32 in [0, 1]
  - ``points``:  (B, To, N, 3 or 6) float32, robot base frame (+ rgb in [0, 1])
  - ``proprio``: (B, To, P) float32, already normalised by the Normalizer
Output: (B, out_dim).

Each modality present in the spec gets its own small network; the history of
``n_obs_steps`` frames is encoded frame by frame and the features are
concatenated, then one MLP fuses everything to ``out_dim``. No ROS, no numpy
preprocessing here: that lives in ``perception.preprocess``.
"""

from __future__ import annotations

import torch
from torch import nn

from l1flow_ros.policy.model_config import EncoderConfig  # torch-free: manifests read without torch
from l1flow_ros.spec import ObservationSpec

# Order of the positional inputs of the exported encoder graph.
MODALITIES = ("rgb", "points", "proprio")
# The modalities encoded one observation step at a time (their features can be cached per step).
STEP_MODALITIES = ("rgb", "points")


def _gn(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(groups, channels), channels)


class _ResBlock(nn.Module):
    """Two 3x3 convolutions with GroupNorm; stride 2 halves the resolution."""

    def __init__(self, c_in: int, c_out: int, stride: int, groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _gn(c_out, groups)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = _gn(c_out, groups)
        self.skip = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), _gn(c_out, groups))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return torch.relu(y + self.skip(x))


class SpatialSoftmax(nn.Module):
    """Feature map (N, C, h, w) -> expected (x, y) of K keypoints (N, 2K), in [-1, 1].

    Keeps where things are, which average pooling throws away; that is what
    manipulation needs from an image.
    """

    def __init__(self, c_in: int, keypoints: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(c_in, keypoints, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (N, K, h, w)
        n, k, h, w = x.shape
        attn = torch.softmax(x.flatten(2), dim=-1)  # (N, K, h*w)
        ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        ex = (attn * gx.reshape(1, 1, -1)).sum(-1)  # (N, K)
        ey = (attn * gy.reshape(1, 1, -1)).sum(-1)
        return torch.cat([ex, ey], dim=-1)  # (N, 2K)


class ImageEncoder(nn.Module):
    """ResNet-style CNN with GroupNorm and a spatial-softmax head: (N, 3, H, W) -> (N, F)."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        c0 = cfg.image_channels[0]
        self.stem = nn.Sequential(nn.Conv2d(3, c0, 3, padding=1, bias=False), _gn(c0, cfg.groups), nn.ReLU())
        stages = []
        c_in = c0
        for c in cfg.image_channels:
            stages.append(_ResBlock(c_in, c, stride=2, groups=cfg.groups))
            c_in = c
        self.stages = nn.Sequential(*stages)
        self.pool = SpatialSoftmax(c_in, cfg.image_keypoints)
        self.out = nn.Sequential(nn.Linear(2 * cfg.image_keypoints, cfg.image_feature_dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * 2.0 - 1.0  # [0, 1] -> [-1, 1]
        return self.out(self.pool(self.stages(self.stem(x))))


class PointEncoder(nn.Module):
    """PointNet: shared per-point MLP, then max pool: (N, Np, C) -> (N, F).

    xyz is rescaled from the workspace box to [-1, 1] so that the network sees
    the same range whatever the robot's size.
    """

    def __init__(self, in_channels: int, workspace: tuple[float, ...], cfg: EncoderConfig) -> None:
        super().__init__()
        lo = torch.tensor(workspace[0::2], dtype=torch.float32)
        hi = torch.tensor(workspace[1::2], dtype=torch.float32)
        self.register_buffer("center", (lo + hi) / 2, persistent=False)
        self.register_buffer("half_extent", ((hi - lo) / 2).clamp_min(1e-6), persistent=False)
        layers: list[nn.Module] = []
        c = in_channels
        for h in cfg.point_hidden:
            layers += [nn.Linear(c, h), nn.LayerNorm(h), nn.ReLU()]
            c = h
        self.mlp = nn.Sequential(*layers)
        self.out = nn.Sequential(nn.Linear(c, cfg.point_feature_dim), nn.ReLU())

    def forward(self, pts: torch.Tensor) -> torch.Tensor:
        xyz = (pts[..., :3] - self.center) / self.half_extent
        x = torch.cat([xyz, pts[..., 3:] * 2.0 - 1.0], dim=-1)  # colours [0, 1] -> [-1, 1]
        x = self.mlp(x)  # (N, Np, C)
        return self.out(x.max(dim=1).values)  # (N, F)


class ObservationEncoder(nn.Module):
    """All modalities of an :class:`ObservationSpec` -> (B, out_dim)."""

    def __init__(self, obs_spec: ObservationSpec, cfg: EncoderConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or EncoderConfig()
        self.obs_spec = obs_spec
        self.cfg = cfg
        to = obs_spec.n_obs_steps
        if to < 1:
            raise ValueError(f"n_obs_steps must be >= 1, got {to}")
        self.use_rgb = bool(obs_spec.use_rgb and obs_spec.cameras)
        self.use_points = obs_spec.num_points > 0
        self.use_proprio = len(obs_spec.proprio_names) > 0
        if not (self.use_rgb or self.use_points or self.use_proprio):
            raise ValueError(
                "observation spec has no modality: no cameras with use_rgb, no points, no proprio"
            )
        feat = 0
        if self.use_rgb:
            n_views = len(obs_spec.cameras)
            n_nets = 1 if cfg.share_image_encoder else n_views
            self.image_encoders = nn.ModuleList([ImageEncoder(cfg) for _ in range(n_nets)])
            feat += to * n_views * cfg.image_feature_dim
        if self.use_points:
            c = 6 if obs_spec.point_color else 3
            self.point_encoder = PointEncoder(c, obs_spec.workspace, cfg)
            feat += to * cfg.point_feature_dim
        if self.use_proprio:
            p = to * len(obs_spec.proprio_names)
            self.proprio_encoder = nn.Sequential(
                nn.Linear(p, cfg.proprio_hidden),
                nn.Mish(),
                nn.Linear(cfg.proprio_hidden, cfg.proprio_feature_dim),
            )
            feat += cfg.proprio_feature_dim
        self.fuse = nn.Sequential(
            nn.Linear(feat, cfg.out_dim), nn.Mish(), nn.Linear(cfg.out_dim, cfg.out_dim)
        )
        self.out_dim = cfg.out_dim

    @property
    def input_names(self) -> tuple[str, ...]:
        """The modalities this encoder reads, in the order of :meth:`forward_tensors`."""
        use = {"rgb": self.use_rgb, "points": self.use_points, "proprio": self.use_proprio}
        return tuple(m for m in MODALITIES if use[m])

    def input_shapes(self, batch: int = 1) -> dict[str, tuple[int, ...]]:
        """Expected batched shape of each input (for checks and export)."""
        s = self.obs_spec
        shapes = {}
        if self.use_rgb:
            shapes["rgb"] = (batch, s.n_obs_steps, len(s.cameras), 3, *s.image_size)
        if self.use_points:
            shapes["points"] = (batch, s.n_obs_steps, s.num_points, 6 if s.point_color else 3)
        if self.use_proprio:
            shapes["proprio"] = (batch, s.n_obs_steps, len(s.proprio_names))
        return shapes

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        missing = [k for k in self.input_names if k not in obs]
        if missing:
            raise KeyError(f"observation is missing {missing}; this encoder reads {list(self.input_names)}")
        return self.forward_tensors(*(obs[k] for k in self.input_names))

    def forward_tensors(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Positional form of :meth:`forward`, inputs in :attr:`input_names` order."""
        obs = dict(zip(self.input_names, inputs))
        b, to = inputs[0].shape[:2]
        feats = None
        if self.step_input_names:  # every step at once: (B*To, ...) -> (B, To, S)
            step = self.step_features(*(obs[k].flatten(0, 1) for k in self.step_input_names))
            feats = step.reshape(b, to, -1)
        return self.head(feats, obs.get("proprio"))

    # The encoder in two parts, so that a node can encode each observation step once and
    # keep its features: forward_tensors(x) == head(step_features(x per step) stacked, proprio).

    @property
    def step_input_names(self) -> tuple[str, ...]:
        """The modalities encoded per step (inputs of :meth:`step_features`), in order."""
        return tuple(m for m in self.input_names if m in STEP_MODALITIES)

    @property
    def step_feature_dim(self) -> int:
        """S: the size of one step's features (0 when no modality is encoded per step)."""
        d = len(self.obs_spec.cameras) * self.cfg.image_feature_dim if self.use_rgb else 0
        return d + (self.cfg.point_feature_dim if self.use_points else 0)

    def step_features(self, *inputs: torch.Tensor) -> torch.Tensor:
        """One step per row: rgb (N, V, 3, H, W), points (N, Np, C) (:attr:`step_input_names`
        order) -> (N, S): each view's image features, then the point features."""
        obs = dict(zip(self.step_input_names, inputs))
        feats = []
        if self.use_rgb:
            rgb = obs["rgb"]
            for i in range(rgb.shape[1]):
                net = self.image_encoders[0 if len(self.image_encoders) == 1 else i]
                feats.append(net(rgb[:, i]))  # (N, F)
        if self.use_points:
            feats.append(self.point_encoder(obs["points"]))  # (N, Fp)
        return torch.cat(feats, dim=-1)

    def head(self, feats: torch.Tensor | None, proprio: torch.Tensor | None = None) -> torch.Tensor:
        """feats (B, To, S) of :meth:`step_features` (None without per-step modalities), proprio
        (B, To, P) (normalised; None when not observed) -> (B, out_dim)."""
        parts = []
        if feats is not None:
            b, to = feats.shape[:2]
            n_img = len(self.obs_spec.cameras) * self.cfg.image_feature_dim if self.use_rgb else 0
            if self.use_rgb:  # (B, To, V, F) -> per view, its steps in time order: (B, V*To*F)
                img = feats[..., :n_img].reshape(b, to, len(self.obs_spec.cameras), -1)
                parts.append(img.transpose(1, 2).reshape(b, -1))
            if self.use_points:
                parts.append(feats[..., n_img:].reshape(b, -1))  # (B, To*Fp)
        if self.use_proprio:
            parts.append(self.proprio_encoder(proprio.flatten(1)))  # (B, F)
        return self.fuse(torch.cat(parts, dim=-1))  # (B, out_dim)
