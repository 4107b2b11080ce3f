"""IMLE distillation: a one-step student of a flow-matching teacher, trained with a
bi-directional Chamfer set loss, which keeps every mode of the teacher.

For each observation the teacher draws m chunks (its own multi-step sampler) and
the student n chunks in one pass each from fresh noise; the loss pulls a student
sample to every teacher sample and keeps every student sample near one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from l1flow_ros.policy.methods.base import LossInputs, Method, SamplerKind
from l1flow_ros.spec import SamplerSpec

if TYPE_CHECKING:
    import torch

    from l1flow_ros.policy.model import ModelConfig, PolicyModel
    from l1flow_ros.policy.train import ObjectiveConfigs

    Net = torch.nn.Module


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


def one_step(net: Net, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """A one-step generator (IMLE student): chunk = f(eps, 0)."""
    from l1flow_ros.policy.samplers import tvec

    return net(noise, tvec(noise, 0.0), cond)


def chamfer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Bi-directional Chamfer between sample sets a (B, m, H, A) and b (B, n, H, A).

    Mean over the batch of: every a's squared distance to its nearest b (b
    covers a) plus every b's distance to its nearest a (b stays on a).
    Distances are per element (mean over H * A).
    """
    import torch

    d = torch.cdist(a.flatten(2), b.flatten(2)).square() / a[0, 0].numel()  # (B, m, n)
    return d.min(dim=2).values.mean() + d.min(dim=1).values.mean()


def loss(
    student: Net,
    cond: torch.Tensor,
    teacher_samples: torch.Tensor,
    cfg: ImleConfig,
    gen: torch.Generator | None = None,
) -> torch.Tensor:
    """IMLE distillation: n one-step student samples per observation against the
    teacher's m samples (B, m, H, A), bi-directional Chamfer: every teacher mode
    gets a nearby student sample, and no student sample drifts off the teacher's
    support."""
    from l1flow_ros.policy.objectives import randn

    b, _, h, a = teacher_samples.shape
    n = cfg.student_samples
    noise = randn((b * n, h, a), teacher_samples, gen)
    s = one_step(student, cond.repeat_interleave(n, dim=0), noise).reshape(b, n, h, a)
    return chamfer(teacher_samples, s)


def _step_loss(b: LossInputs) -> torch.Tensor:
    import torch

    from l1flow_ros.policy.objectives import teacher_samples

    c = b.cfgs.imle
    if b.pool is not None:
        if b.index is None:
            raise ValueError("a teacher pool needs the batch's dataset indices")
        n, m = b.x1.shape[0], c.teacher_samples
        pick = torch.rand(n, b.pool.shape[1], device=b.x1.device).argsort(dim=1)[:, :m]  # m of K, no repeats
        samples = b.pool[b.index.to(b.pool.device)[:, None], pick]  # (B, m, H, A)
        return loss(b.net, b.cond, samples, c)
    with torch.no_grad():
        samples = teacher_samples(
            b.teacher.sample, b.teacher.encode(b.obs), c.teacher_samples, tuple(b.x1.shape[1:])
        )  # (B, m, H, A)
    return loss(b.net, b.cond, samples, c)


def _sample(net: Net, cond: torch.Tensor, noise: torch.Tensor, s: SamplerSpec, model_cfg: ModelConfig,
            warm: torch.Tensor | None) -> torch.Tensor:
    return one_step(net, cond, noise)


def _default_sampler(cfgs: ObjectiveConfigs | None = None) -> SamplerSpec:
    return SamplerSpec(kind="imle", steps=1, t_values=())


def _prepare_teacher(teacher: PolicyModel, cfgs: ObjectiveConfigs) -> PolicyModel:
    steps = cfgs.imle.teacher_steps
    return teacher.with_sampler(dataclasses.replace(teacher.sampler, steps=steps)) if steps > 0 else teacher


def _teacher_pool(cfgs: ObjectiveConfigs) -> int:
    k, m = cfgs.imle.teacher_pool, cfgs.imle.teacher_samples
    if 0 < k < m:
        raise ValueError(f"teacher_pool {k} < teacher_samples {m}")
    return k


KIND = SamplerKind("imle", "sample", 1, _sample, lambda n: f"IMLE {n}-step", flow_time=True)

METHOD = Method(
    name="imle",
    label="IMLE distillation (one step)",
    kinds=(KIND,),
    loss=_step_loss,
    default_sampler=_default_sampler,
    distill=True,
    teacher="fm",
    needs_teacher=True,
    teacher_prediction="velocity",
    student_init=lambda cfgs, teacher_prediction: cfgs.imle.init,
    prepare_teacher=_prepare_teacher,
    teacher_pool=_teacher_pool,
    prefix_training=False,
)
