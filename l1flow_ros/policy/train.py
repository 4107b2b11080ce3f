"""One flat training loop for every method (nanoGPT style): what differs between
methods (loss, default sampler, teacher) is in their modules, ``l1flow_ros.policy.methods``.

    l1flow train   --objective l1flow|fm|ddpm|regression --data STORE --out BUNDLE
    l1flow distill --method imle|ofp --teacher BUNDLE --data STORE --out BUNDLE

AdamW, linear warm-up + cosine learning rate (:func:`lr_at`), gradient
clipping, an EMA of the weights (the EMA is what the bundles hold), a tqdm bar
with the loss, a bundle every ``save_every`` steps and at the end, and
``train_state.pt`` next to it for ``--resume``.

Under ``torchrun`` the same code runs data-parallel (DDP; NCCL on GPU, gloo
on CPU): every process draws its own batches, gradients are averaged, and
process 0 writes the bundle. ``batch_size`` is per process.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

from l1flow_ros.policy import methods
from l1flow_ros.policy import objectives as obj
from l1flow_ros.policy.bundle import load_bundle, make_manifest, save_bundle
from l1flow_ros.policy.config import FlowTimeConfig, TrainConfig
from l1flow_ros.policy.methods import LossInputs
from l1flow_ros.policy.methods.imle import ImleConfig
from l1flow_ros.policy.methods.ofp import OfpConfig
from l1flow_ros.policy.model import ModelConfig, PolicyModel, prediction_for
from l1flow_ros.policy.normalizer import Normalizer
from l1flow_ros.policy.prefix import PrefixTrainConfig, rtc_weights
from l1flow_ros.spec import ActionSpec, ObservationSpec, SamplerSpec

STATE_FILE = "train_state.pt"
LOG_FILE = "train_log.jsonl"


@dataclass(frozen=True)
class ObjectiveConfigs:
    """The per-method knobs (recorded in the manifest as ``train["objective"]``); only those
    of the method being trained matter. A method with knobs of its own adds a field here."""

    flow_time: FlowTimeConfig = field(default_factory=FlowTimeConfig)  # L1 Flow, FM, OFP
    imle: ImleConfig = field(default_factory=ImleConfig)
    ofp: OfpConfig = field(default_factory=OfpConfig)
    prefix: PrefixTrainConfig = field(default_factory=PrefixTrainConfig)  # any method but IMLE


def lr_at(step: int, base_lr: float, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio * base_lr`` at ``total``."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def ema_decay_at(step: int, max_decay: float) -> float:
    """EMA decay ramped up from 0: early on the EMA must follow a fast-changing net."""
    return min(max_decay, (1 + step) / (10 + step))


@torch.no_grad()
def ema_update(ema_params: list[torch.Tensor], params: list[torch.Tensor], decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * params, over lists of tensors (built once)."""
    torch._foreach_lerp_(ema_params, params, 1 - decay)


class LossModule(nn.Module):
    """forward(obs, actions) -> scalar loss of the method; the one module DDP wraps.

    The teacher and the EMA target are kept out of the registered modules
    (in a tuple), so DDP neither syncs nor checks them.
    """

    def __init__(
        self,
        model: PolicyModel,
        objective: str,
        cfgs: ObjectiveConfigs,
        teacher: PolicyModel | None = None,
        ema: PolicyModel | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.objective = objective
        self.method = methods.get(objective)
        self.cfgs = cfgs
        if teacher is not None:
            teacher = self.method.prepare_teacher(teacher, cfgs)
        self._aux = (teacher, ema)
        self._shift = model.action_spec.n_action_steps
        self.pool: torch.Tensor | None = None  # (N, K, H, A) teacher samples per dataset item

    @torch.no_grad()
    def build_teacher_pool(self, dataset: Dataset, k: int, device: torch.device, seed: int) -> float:
        """Draw ``k`` teacher samples for every item of ``dataset`` (IMLE ``teacher_pool``); seconds taken."""
        teacher = self._aux[0]
        if teacher is None or not hasattr(dataset, "__getitems__"):
            raise ValueError("teacher_pool needs a teacher and a dataset with batched __getitems__")
        t0 = time.monotonic()
        gen = torch.Generator(device).manual_seed(seed)
        n, step = len(dataset), max(1, 4096 // k)
        parts = []
        for i in range(0, n, step):
            batch = _to(dataset.__getitems__(list(range(i, min(n, i + step)))), device)
            shape = tuple(batch["action"].shape[1:])
            parts.append(obj.teacher_samples(teacher.sample, teacher.encode(batch["obs"]), k, shape, gen))
        self.pool = torch.cat(parts)
        return time.monotonic() - t0

    def forward(
        self, obs: dict[str, torch.Tensor], x1: torch.Tensor, index: torch.Tensor | None = None
    ) -> torch.Tensor:
        teacher, ema = self._aux
        cond = self.model.encode(obs)  # (B, D)
        net, ema_head = self.model.head, ema.head if ema is not None else None
        if self.cfgs.prefix.enabled:  # the network and its EMA target see the same clean prefix
            prefix, mask = random_prefix(x1, self.cfgs.prefix.longest(x1.shape[1], self._shift),
                                         self.cfgs.prefix.none_share, soft=self.cfgs.prefix.soft)
            net = functools.partial(net, prefix=prefix, mask=mask)
            if ema_head is not None:
                ema_head = functools.partial(ema_head, prefix=prefix, mask=mask)
        return self.method.loss(LossInputs(
            net=net, cond=cond, x1=x1, obs=obs, cfgs=self.cfgs, model_cfg=self.model.cfg,
            teacher=teacher, ema=ema, pool=self.pool, index=index, ema_head=ema_head,
        ))  # fmt: skip


@functools.lru_cache(maxsize=8)
def _rtc_table(h: int) -> torch.Tensor:
    """(H + 1, H + 1, H): ``rtc_weights(h, d, e)`` at [d, e]."""
    return torch.from_numpy(np.stack([np.stack([rtc_weights(h, d, e) for e in range(h + 1)]) for d in range(h + 1)]))


def random_prefix(x1: torch.Tensor, longest: int, none_share: float, gen: torch.Generator | None = None,
                  soft: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """A random clean prefix per chunk of ``x1`` (B, H, A): its first d actions, d uniform in
    [1, longest] (0 for a ``none_share`` of them): (prefix (B, H, A) zero beyond d, mask (B, H)).
    ``soft``: the mask is ``rtc_weights(H, d, e)`` with the overlap e uniform in [d, H] (all 0
    where d = 0) and the prefix the clean actions where it is above 0."""
    b, h = x1.shape[0], x1.shape[1]
    dev = x1.device
    d = torch.randint(1, max(1, longest) + 1, (b,), generator=gen, device=dev)
    if longest < 1:
        d = torch.zeros_like(d)
    d = torch.where(torch.rand(b, generator=gen, device=dev) < none_share, torch.zeros_like(d), d)
    mask = (torch.arange(h, device=dev)[None, :] < d[:, None]).to(x1.dtype)  # (B, H)
    if soft:  # rtc_weights(H, d, e) per chunk, looked up in the table of every (d, e)
        e = d + (torch.rand(b, generator=gen, device=dev) * (h - d + 1)).long().clamp(max=h - d)
        e = torch.where(d > 0, e, torch.zeros_like(e))
        mask = _rtc_table(h).to(device=dev, dtype=x1.dtype)[d, e]  # (B, H)
        return x1 * (mask > 0).to(x1.dtype)[:, :, None], mask
    return x1 * mask[:, :, None], mask


class _Indexed(Dataset):
    """A batched dataset whose batches also carry their item indices (for the IMLE teacher pool)."""

    def __init__(self, dataset: Dataset) -> None:
        if not hasattr(dataset, "__getitems__"):
            raise ValueError("teacher_pool needs a dataset with batched __getitems__")
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, idx: list[int]) -> dict:
        batch = self.dataset.__getitems__(idx)
        batch["index"] = torch.as_tensor(idx, dtype=torch.long)
        return batch


def _widened(src: dict[str, torch.Tensor], dst: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``src`` weights for a network with more input channels (``dst``): a tensor whose input
    dimension (1) grew gets the old channels copied and zeros for the new ones, so the wider
    network computes what ``src`` did while the new inputs are zero."""
    out = {}
    for k, v in src.items():
        w = dst.get(k)
        if w is not None and w.shape != v.shape and w.ndim == v.ndim >= 2 and w.shape[0] == v.shape[0] \
                and w.shape[1] > v.shape[1] and w.shape[2:] == v.shape[2:]:
            grown = torch.zeros_like(w)
            grown[:, : v.shape[1]] = v
            v = grown
        out[k] = v
    return out


def _dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def random_shift(rgb: torch.Tensor, shift: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """Shift-augment images (B, To, V, 3, H, W) by up to +-shift pixels (edges replicated).

    One offset per sample and view, the same for all its history frames, so
    the motion between frames is kept (the DrQ / Diffusion Policy augmentation).
    """
    if shift <= 0:
        return rgb
    b, to, v, c, h, w = rgb.shape
    x = rgb.permute(0, 2, 1, 3, 4, 5).reshape(b * v, to * c, h, w)  # (B*V, To*3, H, W)
    x = torch.nn.functional.pad(x, (shift, shift, shift, shift), mode="replicate")
    off = torch.randint(0, 2 * shift + 1, (b * v, 2), generator=gen)
    out = torch.stack([x[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(off.tolist())])
    return out.reshape(b, v, to, c, h, w).permute(0, 2, 1, 3, 4, 5)


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch.to(device, non_blocking=True)


def _batch_as_is(batch: Any) -> Any:
    return batch


def _atomic_torch_save(obj_: Any, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj_, tmp)
    os.replace(tmp, path)


def train(
    dataset: Dataset,
    normalizer: Normalizer,
    obs_spec: ObservationSpec,
    action_spec: ActionSpec,
    out_dir: str | os.PathLike,
    cfg: TrainConfig,
    model_cfg: ModelConfig | None = None,
    sampler: SamplerSpec | None = None,
    cfgs: ObjectiveConfigs | None = None,
    teacher_dir: str | os.PathLike | None = None,
    resume: bool = False,
    info: dict[str, Any] | None = None,
    progress: bool = True,
) -> str:
    """Train (or distil) and write a bundle to ``out_dir``; returns its fingerprint.

    ``dataset`` items are ``{"obs": {k: (To, ...)}, "action": (H, A)}``, already
    normalised with ``normalizer`` (as :class:`~l1flow_ros.data.store.ChunkDataset` gives).
    For ``imle`` / ``ofp``, ``teacher_dir`` names a trained bundle: the student
    starts from (part of) its weights and must share its specs and normaliser.
    OFP also trains from scratch (no teacher), as self-distillation.
    """
    cfgs = cfgs or ObjectiveConfigs()
    method = methods.get(cfg.objective)
    rank, world, local_rank = _dist_env()
    if cfg.device == "auto":
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(f"cuda:{local_rank}" if cfg.device == "cuda" else cfg.device)
    if world > 1 and not torch.distributed.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    torch.manual_seed(cfg.seed + rank)
    out = Path(out_dir)

    # ---- models: student (or model), optional teacher, EMA.
    teacher = None
    sampler = sampler or method.default_sampler(cfgs)
    if model_cfg is None:
        model_cfg = ModelConfig(prediction=prediction_for(sampler.kind))
    if method.needs_teacher and teacher_dir is None:
        raise ValueError(f"{method.label} needs a teacher bundle")
    if method.distill and teacher_dir is not None:
        t_manifest, teacher = load_bundle(teacher_dir, device=str(device))
        want = method.teacher_prediction
        if want is not None and t_manifest.model.prediction != want:
            raise ValueError(f"{method.label} distils a {want!r}-predicting teacher (e.g. {method.teacher}), "
                             f"not a {t_manifest.model.prediction!r} one")
        if (t_manifest.observation, t_manifest.action) != (obs_spec, action_spec):
            raise ValueError("the teacher's observation / action specs differ from the data's")
        if t_manifest.normalizer != normalizer.to_dict():
            raise ValueError("the data must be normalised with the teacher's normaliser")
        teacher.requires_grad_(False)
        model_cfg = dataclasses.replace(t_manifest.model, prediction=prediction_for(sampler.kind))
    if cfgs.prefix.enabled:
        if not method.prefix_training:
            raise ValueError(f"{method.label} cannot be trained with a prefix input (its teacher's samples "
                             "are not conditioned on it); draw it with prefix inpainting instead")
        model_cfg = dataclasses.replace(model_cfg, unet=dataclasses.replace(
            model_cfg.unet, prefix_input=True, prefix_soft=cfgs.prefix.soft))
    model = PolicyModel(obs_spec, action_spec, sampler, model_cfg)
    if teacher is not None:
        init = method.student_init(cfgs, t_manifest.model.prediction)
        if init == "teacher":
            # A flow map's r-embedding starts at zero: the OFP student starts as the teacher.
            model.load_state_dict(_widened(teacher.state_dict(), model.state_dict()), strict=False)
        elif init == "encoder":
            model.encoder.load_state_dict(teacher.encoder.state_dict())
        elif init != "scratch":
            raise ValueError(f"{cfg.objective} init {init!r} not in ('encoder', 'teacher', 'scratch')")
    model.to(device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    loss_module = LossModule(model, cfg.objective, cfgs, teacher=teacher, ema=ema)
    pool_info = None
    k = method.teacher_pool(cfgs) if method.teacher_pool is not None else 0
    if k > 0:
        secs = loss_module.build_teacher_pool(dataset, k, device, cfg.seed)
        pool_info = {"teacher_pool": k, "items": len(dataset), "pool_s": round(secs, 2)}
        dataset = _Indexed(dataset)
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        loss_module = nn.parallel.DistributedDataParallel(loss_module, device_ids=ids)
    params, ema_params = list(model.parameters()), list(ema.parameters())
    decay, no_decay = [], []
    for p in params:
        (decay if p.ndim >= 2 else no_decay).append(p)  # no weight decay on norms and biases
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=cfg.betas,
        foreach=True,  # on CPU too: one kernel per step instead of one per tensor
    )

    # ---- resume.
    step = 0
    state_path = out / STATE_FILE
    if resume and state_path.is_file():
        state = torch.load(state_path, map_location=device, weights_only=False)
        if state["config"]["objective"] != cfg.objective:
            raise ValueError(
                f"{state_path} is from a {state['config']['objective']!r} run, not {cfg.objective!r}"
            )
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        step = int(state["step"])
        torch.manual_seed(cfg.seed + rank + 7919 * step)  # fresh noise after a resume

    # ---- data: an endless stream of random batches per process.
    gen = torch.Generator().manual_seed(cfg.seed + 1000 * rank + 7919 * step)
    remaining = max(cfg.steps - step, 0)
    loader = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=RandomSampler(
            dataset, replacement=True, num_samples=max(1, remaining) * cfg.batch_size, generator=gen
        ),
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=cfg.num_workers > 0,
        # A dataset with a batched __getitems__ returns whole batches: skip per-item collation.
        collate_fn=_batch_as_is if hasattr(dataset, "__getitems__") else None,
    )

    def save(at_step: int) -> str:
        meta = {
            "train": dataclasses.asdict(cfg),
            "objective": dataclasses.asdict(cfgs),
            "step": at_step,
            "world_size": world,
            **(info or {}),
        }
        if teacher is not None:
            meta["teacher"] = t_manifest.fingerprint
        fp = save_bundle(out, ema, make_manifest(ema, normalizer, meta))
        state = {
            "step": at_step,
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "opt": opt.state_dict(),
            "config": dataclasses.asdict(cfg),
        }
        _atomic_torch_save(state, state_path)
        return fp

    # ---- loop.
    from tqdm import tqdm

    is_main = rank == 0
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    log = open(out / LOG_FILE, "a") if is_main else None  # closed in finally
    if log and pool_info:
        log.write(json.dumps(pool_info) + "\n")
    bar = tqdm(
        total=cfg.steps,
        initial=step,
        disable=not (is_main and progress),
        dynamic_ncols=True,
        desc=cfg.objective,
    )
    fingerprint = ""
    model.train()
    t0 = time.monotonic()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda")
    try:
        for batch in loader:
            if step >= cfg.steps:
                break
            lr = lr_at(step, cfg.lr, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
            for g in opt.param_groups:
                g["lr"] = lr
            batch = _to(batch, device)
            if "rgb" in batch["obs"]:
                batch["obs"]["rgb"] = random_shift(batch["obs"]["rgb"], cfg.image_shift)
            with autocast:
                loss = loss_module(batch["obs"], batch["action"], batch.get("index"))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip, foreach=True)
            opt.step()
            ema_update(ema_params, params, ema_decay_at(step, cfg.ema_decay))
            step += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.steps:
                rec = {"step": step, "loss": loss.item(), "lr": lr, "grad_norm": float(grad_norm)}
                rec["elapsed_s"] = round(time.monotonic() - t0, 2)
                bar.set_postfix(loss=f"{rec['loss']:.4f}", lr=f"{lr:.2e}")
                if log:
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
            if is_main and (step % cfg.save_every == 0 or step == cfg.steps):
                fingerprint = save(step)
        if is_main and not fingerprint:  # resumed a finished run: re-save as is
            fingerprint = save(step)
        if world > 1:
            _check_replicas_agree(model)
    finally:
        bar.close()
        if log:
            log.close()
        if world > 1 and torch.distributed.is_initialized():
            torch.distributed.barrier()
    return fingerprint


def _check_replicas_agree(model: nn.Module) -> None:
    """After DDP training every process must hold the same weights."""
    flat = torch.cat([p.detach().float().reshape(-1) for p in model.parameters()])
    lo, hi = flat.clone(), flat.clone()
    torch.distributed.all_reduce(lo, op=torch.distributed.ReduceOp.MIN)
    torch.distributed.all_reduce(hi, op=torch.distributed.ReduceOp.MAX)
    diff = float((hi - lo).abs().max())
    if diff > 1e-5:
        raise RuntimeError(f"DDP replicas diverged (max weight difference {diff})")
