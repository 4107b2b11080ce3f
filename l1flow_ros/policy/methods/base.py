"""What a training method is: a :class:`Method` (objective and defaults) and the
:class:`SamplerKind` s that draw chunks from the network it trains.

Plain data with functions in it: nothing here imports torch, so the command line
lists the methods (choices, help) without loading it; the functions a method holds
import torch when they are called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from l1flow_ros.spec import SamplerSpec

if TYPE_CHECKING:
    import torch

    from l1flow_ros.policy.model import ModelConfig, PolicyModel
    from l1flow_ros.policy.train import ObjectiveConfigs

# sample(net, cond (B, D), noise, spec, model_cfg, warm (B, H, A) | None) -> chunk (B, H, A)
SampleFn = Callable[..., "torch.Tensor"]


@dataclass(frozen=True)
class SamplerKind:
    """One value of ``SamplerSpec.kind``: how a chunk is drawn from a network.

    ``sample`` is a stateless function of the network, the conditioning and the
    noise (the noise is an argument, so torch, ONNX Runtime and TensorRT give the
    same chunk for the same noise); its loops run over Python constants, so
    tracing unrolls them into one graph.
    """

    name: str  # the manifest's sampler kind, e.g. "ddim"
    prediction: str  # what the network must output: "sample", "velocity", "epsilon", ...
    default_steps: int  # steps when a sampler string gives none ("fm" = "fm:10")
    sample: SampleFn
    label: Callable[[int], str]  # display name for a number of steps, e.g. 10 -> "DDIM 10"
    warm_start: bool = False  # accepts a warm start from the previous chunk's tail
    noise_per_step: bool = False  # noise is (B, K, H, A), fresh noise for each of K steps (ancestral DDPM)
    # Calls the network on flow-time points x_t = t x1 + (1 - t) eps (t = 0 noise, t = 1 data), so
    # a running plan's prefix can be imposed on its inputs (``policy.prefix``).
    flow_time: bool = False
    # check(spec, model_cfg): raise ValueError when this network cannot be drawn with spec.
    check: Callable[[SamplerSpec, ModelConfig], None] | None = None


@dataclass
class LossInputs:
    """What one training step's loss sees (built by ``LossModule.forward``)."""

    net: torch.nn.Module  # the chunk network being trained: net(x (B, H, A), t (B,), cond (B, D)[, r (B,)])
    cond: torch.Tensor  # (B, D) its conditioning, from the model's encoder
    x1: torch.Tensor  # (B, H, A) clean chunks, normalised
    obs: dict[str, torch.Tensor]  # the batch's observations (a teacher encodes them itself)
    cfgs: ObjectiveConfigs
    model_cfg: ModelConfig
    teacher: PolicyModel | None = None  # frozen teacher (distillation)
    ema: PolicyModel | None = None  # EMA copy of the model, no gradient (OFP's target)
    pool: torch.Tensor | None = None  # (N, K, H, A) teacher samples drawn once per dataset item
    index: torch.Tensor | None = None  # (B,) dataset indices of the batch (with a pool)
    ema_head: Callable[..., torch.Tensor] | None = None  # the EMA's chunk network, called like ``net``


def _identity_teacher(teacher: PolicyModel, cfgs: ObjectiveConfigs) -> PolicyModel:
    return teacher


@dataclass(frozen=True)
class Method:
    """A training method: its objective, what its network predicts, the sampler its
    bundles ship with, and, for a distillation, what it needs from its teacher.

    ``name`` is ``TrainConfig.objective`` (recorded in every bundle's manifest);
    ``l1flow pipeline`` names a method's bundle after its default sampler kind.
    """

    name: str  # "l1flow", ..., the objective name in manifests and on the command line
    label: str  # display name, e.g. "L1 Flow"
    kinds: tuple[SamplerKind, ...]  # the sampler kinds it defines; the first is the default
    loss: Callable[[LossInputs], torch.Tensor]  # scalar loss of one batch
    # default_sampler(cfgs or None) -> the SamplerSpec a bundle trained this way ships with.
    default_sampler: Callable[[ObjectiveConfigs | None], SamplerSpec]
    distill: bool = False  # trained by ``l1flow distill`` from a teacher bundle
    teacher: str | None = None  # the method whose bundle ``l1flow pipeline`` distils this one from
    needs_teacher: bool = False  # a teacher bundle is required (else optional)
    teacher_prediction: str | None = None  # the teacher's network must predict this (None: any)
    # student_init(cfgs, teacher prediction) -> "teacher" | "encoder" | "scratch": what the student
    # starts from when a teacher is given.
    student_init: Callable[[ObjectiveConfigs, str], str] | None = None
    # prepare_teacher(teacher, cfgs) -> the teacher as the loss uses it (e.g. other sampler steps).
    prepare_teacher: Callable[[PolicyModel, ObjectiveConfigs], PolicyModel] = _identity_teacher
    # teacher_pool(cfgs) -> K > 0: K teacher samples per training item are drawn once before the
    # loop (``LossInputs.pool``); None: the method takes no pool.
    teacher_pool: Callable[[ObjectiveConfigs], int] | None = None
    # A reference to compare with, not a policy to deploy: left out of ``l1flow pipeline`` and
    # of the default latency benchmark.
    reference: bool = False
    # Can be trained with a clean action prefix as input (``policy.prefix.PrefixTrainConfig``):
    # its loss fits the data given the prefix. IMLE cannot: its teacher's sample set is not
    # conditioned on the prefix.
    prefix_training: bool = True

    def __post_init__(self) -> None:
        if not self.kinds:
            raise ValueError(f"method {self.name!r}: it defines no sampler kind")
        if self.distill and self.student_init is None:
            raise ValueError(f"method {self.name!r}: a distillation says what the student starts from")

    @property
    def prediction(self) -> str:
        """What the trained network outputs (``ModelConfig.prediction``): what its first
        sampler kind samples."""
        return self.kinds[0].prediction

    @property
    def run_name(self) -> str:
        """The name of this method's bundle in ``l1flow pipeline`` runs: its default sampler kind
        ("ddim" for the DDPM-trained bundle drawn by DDIM 10)."""
        return self.default_sampler(None).kind

