"""Configs of training (plain dataclasses, no torch: the CLI reads their defaults without
importing torch). Serialised into the bundle with ``dataclasses.asdict``. The knobs of one
method (``ImleConfig``, ``OfpConfig``) are in its module, ``l1flow_ros.policy.methods``."""

from __future__ import annotations

from dataclasses import dataclass

from l1flow_ros.policy import methods


@dataclass(frozen=True)
class FlowTimeConfig:
    """Training-time distribution of t: logit-normal, with a share drawn uniform."""

    logit_mean: float = 0.0
    logit_std: float = 1.0
    uniform_share: float = 0.1  # keeps the ends t ~ 0 and t ~ 1 (where the two-step sampler asks) trained


@dataclass(frozen=True)
class TrainConfig:
    objective: str = "l1flow"  # a method's name (l1flow_ros.policy.methods.METHODS)
    steps: int = 20_000
    batch_size: int = 64  # per process
    lr: float = 1e-4
    weight_decay: float = 1e-6
    betas: tuple[float, float] = (0.95, 0.999)
    warmup_steps: int = 500
    min_lr_ratio: float = 0.0
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    save_every: int = 2000
    log_every: int = 20
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = False  # bfloat16 autocast on CUDA
    image_shift: int = 4  # random-shift augmentation of camera images, +-pixels (0 = off)

    def __post_init__(self) -> None:
        if self.objective not in methods.METHODS:
            raise ValueError(f"objective {self.objective!r} not in {tuple(methods.METHODS)}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
