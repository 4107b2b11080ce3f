"""The training methods, one module each, and the one registry that training,
distillation, sampler parsing, export, ``l1flow pipeline`` and the benchmarks enumerate.

========== ========================= ========== ================================
method     trains                    predicts   sampler kinds (default first)
========== ========================= ========== ================================
l1flow     L1 Flow                   sample     l1flow (2-step; N-step Euler)
imle       IMLE one-step student     sample     imle (1 pass)
ofp        One-Step Flow Policy      flow_map   ofp (1 jump; N jumps)
fm         flow matching (teacher)   velocity   fm (N Euler steps)
ddpm       diffusion                 epsilon    ddim (N of K), ddpm (all K)
regression L1 regression (reference) regression regression (1 pass)
========== ========================= ========== ================================

A sampler kind samples every network with its prediction: an IMLE student can be
drawn by the ``l1flow`` sampler, a DDPM network by ``ddim`` or ``ddpm``.

Adding a method: a module here defining ``METHOD`` (a :class:`Method`: name, label,
prediction, loss, default sampler, and the :class:`SamplerKind` s it brings), and its
line in ``_ALL`` below; a new sampler kind is also named in
``l1flow_ros.spec.SAMPLER_KINDS`` (the manifest's contract). Nothing here imports torch
(the command line lists the methods without it). The conventions (t = 0 is noise,
t = 1 is data, ...) are stated once in ``l1flow_ros.policy.samplers``.
"""

from __future__ import annotations

from l1flow_ros.policy.methods import diffusion, fm, imle, l1flow, ofp, regression
from l1flow_ros.policy.methods.base import LossInputs, Method, SamplerKind
from l1flow_ros.spec import SamplerSpec

# The package's methods first (L1 Flow and its one-step students), then the references;
# tables and benchmarks list them in this order.
_ALL = (
    l1flow.METHOD,
    imle.METHOD,
    ofp.METHOD,
    fm.METHOD,
    diffusion.METHOD,
    regression.METHOD,
)

METHODS: dict[str, Method] = {m.name: m for m in _ALL}
SAMPLER_KINDS: dict[str, SamplerKind] = {k.name: k for m in _ALL for k in m.kinds}
# prediction -> the sampler kinds that can draw a network trained to output it
PREDICTIONS: dict[str, tuple[str, ...]] = {}
for _k in SAMPLER_KINDS.values():
    PREDICTIONS[_k.prediction] = (*PREDICTIONS.get(_k.prediction, ()), _k.name)
WARM_START_KINDS = tuple(k.name for k in SAMPLER_KINDS.values() if k.warm_start)


def get(name: str) -> Method:
    """The method called ``name`` (``TrainConfig.objective``)."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; methods: {tuple(METHODS)}") from None


def sampler_kind(name: str) -> SamplerKind:
    """The sampler kind called ``name`` (``SamplerSpec.kind``)."""
    try:
        return SAMPLER_KINDS[name]
    except KeyError:
        raise ValueError(f"unknown sampler kind {name!r}; kinds: {tuple(SAMPLER_KINDS)}") from None


def trained() -> tuple[str, ...]:
    """Methods trained from data (``l1flow train --objective``)."""
    return tuple(m.name for m in _ALL if not m.distill)


def distilled() -> tuple[str, ...]:
    """Methods distilled from a teacher bundle (``l1flow distill --method``)."""
    return tuple(m.name for m in _ALL if m.distill)


def by_run_name() -> dict[str, Method]:
    """``l1flow pipeline``'s methods by the name of their bundle (references left out)."""
    return {m.run_name: m for m in _ALL if not m.reference}


def prediction_for(kind: str) -> str:
    """The network output a sampler kind needs."""
    return sampler_kind(kind).prediction


def label(spec: SamplerSpec) -> str:
    """Display name of a sampler configuration: 'L1 Flow 2-step', 'FM 10-step', 'DDPM 100'."""
    return sampler_kind(spec.kind).label(spec.steps)


def default_samplers(references: bool = False) -> tuple[str, ...]:
    """Every sampler kind at its default steps, 'kind:steps', in registry order (the benchmarks' rows);
    references only when asked."""
    return tuple(f"{k.name}:{k.default_steps}" for m in _ALL if references or not m.reference for k in m.kinds)


__all__ = [
    "METHODS", "PREDICTIONS", "SAMPLER_KINDS", "WARM_START_KINDS", "LossInputs", "Method", "SamplerKind",
    "by_run_name", "default_samplers", "distilled", "get", "label", "prediction_for", "sampler_kind",
    "trained",
]
