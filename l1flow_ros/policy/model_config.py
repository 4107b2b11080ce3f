"""The model's architecture configs: what a manifest records of the networks (no torch).

:class:`ModelConfig` = the prediction the chunk network is trained for + an
:class:`EncoderConfig` (``perception.encoders.ObservationEncoder``) + a :class:`UnetConfig`
(``policy.unet.ConditionalUnet1D``). They live apart from the networks so that reading a
manifest (``policy.manifest``) never imports torch: the executor's 500 Hz process reads a
checkpoint's action limits, and the command line parses configs, without it. The network
modules import them from here, so ``from l1flow_ros.policy.model import ModelConfig`` and
the like keep working.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from l1flow_ros.policy.methods import PREDICTIONS
from l1flow_ros.spec import _from_dict


@dataclass(frozen=True)
class EncoderConfig:
    image_channels: tuple[int, ...] = (16, 32, 64)  # one ResNet stage (stride 2) per entry
    image_keypoints: int = 32  # spatial-softmax keypoints per view
    image_feature_dim: int = 64  # per view and frame
    share_image_encoder: bool = False  # one CNN for all views instead of one per view
    point_hidden: tuple[int, ...] = (64, 128)  # shared per-point MLP widths
    point_feature_dim: int = 64  # per frame
    proprio_hidden: int = 64
    proprio_feature_dim: int = 32  # for the whole history
    out_dim: int = 128
    groups: int = 8  # GroupNorm groups (BatchNorm breaks with EMA and small batches)

    @classmethod
    def from_dict(cls, d: dict) -> EncoderConfig:
        return _from_dict(cls, d)


@dataclass(frozen=True)
class UnetConfig:
    down_dims: tuple[int, ...] = (64, 128, 256)  # small default: trains on 2 CPU cores
    kernel_size: int = 5
    groups: int = 8
    time_embed_dim: int = 64
    time_scale: float = 1000.0  # t in [0, 1] is embedded as t * time_scale
    two_times: bool = False  # also embed a target time r (one-step flow-map students)
    # Two more inputs: a clean action prefix (B, H, A) and its mask (B, H), as 2A + 1 input
    # channels (training-time prefix conditioning, ``l1flow_ros.policy.prefix``).
    prefix_input: bool = False
    # With prefix_input: the mask input carries real-time chunking's weights over the whole
    # overlap with the running plan (1 on the frozen actions, decaying to 0 where the plan
    # ends) and the prefix input the plan over that overlap, not only the frozen actions.
    prefix_soft: bool = False

    @classmethod
    def from_dict(cls, d: dict) -> UnetConfig:
        return _from_dict(cls, d)


# The Diffusion Policy size (about 250 M parameters); for GPU training.
UNET_DP = UnetConfig(down_dims=(512, 1024, 2048), time_embed_dim=256)


@dataclass(frozen=True)
class ModelConfig:
    prediction: str = "sample"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    unet: UnetConfig = field(default_factory=UnetConfig)
    num_train_steps: int = 100  # diffusion training steps (epsilon prediction)

    def __post_init__(self) -> None:
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction {self.prediction!r} not in {sorted(PREDICTIONS)}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        d = dict(d)
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"ModelConfig: unknown fields {sorted(unknown)}")
        if "encoder" in d:
            d["encoder"] = EncoderConfig.from_dict(d["encoder"])
        if "unet" in d:
            d["unet"] = UnetConfig.from_dict(d["unet"])
        return cls(**d)
