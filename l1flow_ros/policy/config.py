"""Configs of training and distillation (plain dataclasses, no torch: the CLI reads their
defaults without importing torch). Serialised into the bundle with ``dataclasses.asdict``."""

from __future__ import annotations

from dataclasses import dataclass

OBJECTIVES = ("l1flow", "fm", "ddpm", "regression")
DISTILL_METHODS = ("imle", "ofp")


@dataclass(frozen=True)
class FlowTimeConfig:
    """Training-time distribution of t: logit-normal, with a share drawn uniform."""

    logit_mean: float = 0.0
    logit_std: float = 1.0
    uniform_share: float = 0.1  # keeps the ends t ~ 0 and t ~ 1 (where the two-step sampler asks) trained


@dataclass(frozen=True)
class ImleConfig:
    teacher_samples: int = 8  # m per observation
    student_samples: int = 8  # n per observation
    teacher_steps: int = 0  # sampler steps for the teacher; 0 = the teacher bundle's own
    # What the student starts from: "encoder" (the teacher's trained encoder, a fresh head: the
    # teacher's head predicts velocities, not chunks), "teacher" (everything) or "scratch".
    init: str = "encoder"
    # > 0: K teacher samples per training item, drawn once before the loop; each step then
    # takes m of that item's K. The teacher's multi-step sampling is most of an IMLE step's
    # cost, so this makes distillation several times cheaper (0 = fresh samples every step).
    teacher_pool: int = 0


@dataclass(frozen=True)
class OfpConfig:
    # Batch shares: plain flow matching (r = t, the base case), warm starts, and the rest
    # self-consistency. On the two-mode task, spending the batch on consistency jumps that
    # end at r = 1 (the one-step use) gave the best one-step samples (docs/BENCHMARKS.md).
    flow_share: float = 0.1
    warm_share: float = 0.1
    one_share: float = 0.97  # within the consistency share, how often the jump ends at r = 1
    warm_t: float = 0.5
    warm_noise: float = 0.05  # std of the perturbation of the warm tail (it is never exact)
    shift: int = 8  # steps between consecutive chunks (the executed part), for warm-start targets
    # Self-guidance weight w: the flow target gets w * (u_ema(c) - u_ema(null)). Off by default:
    # at w = 0.3 the two-mode task lost one-step sample quality (83.5% -> 69% near a mode).
    guidance: float = 0.0
    cond_dropout: float = 0.1  # share of unconditional flow samples (the guidance's reference)


@dataclass(frozen=True)
class TrainConfig:
    objective: str = "l1flow"  # one of OBJECTIVES or DISTILL_METHODS
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
        if self.objective not in OBJECTIVES + DISTILL_METHODS:
            raise ValueError(f"objective {self.objective!r} not in {OBJECTIVES + DISTILL_METHODS}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
