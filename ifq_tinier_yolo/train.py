"""Training loop: WIDER FACE -> Tinier-YOLO quantization network, with checkpoints and resume.

Runs as one process or under `torchrun --nproc_per_node N` (DistributedDataParallel, gloo on
CPU, nccl on GPU). Every epoch: train, validate on the WIDER val subset (rank 0), write
`last.pt` atomically (and `best.pt` when validation improves), append to `metrics.jsonl`.
An epoch's data order and augmentation depend only on (seed, epoch), so `--resume` from the
last completed epoch continues exactly.
"""
from __future__ import annotations

import ast
import copy
import dataclasses
import difflib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from . import netdef
from .checkpoint import load_checkpoint, model_from_checkpoint, model_state, save_checkpoint
from .datasets.loader import WiderTrainSet, collate
from .datasets.wider import read_wider
from .errors import ConfigError, TrainingError
from .fileio import atomic_write_text
from .model.loss import LossConfig, detection_loss
from .model.tinier_yolo import QUANT_MODES, TinierYolo


@dataclass(frozen=True)
class TrainConfig:
    img_size: int = 416            # training crop side, pixels (multiple of the total stride)
    val_size: int = 416            # validation input side, pixels
    epochs: int = 30               # total epochs of this run (schedule length)
    batch: int = 16                # images per step, summed over processes
    lr: float = 2e-3               # peak learning rate
    weight_decay: float = 5e-4     # decoupled (AdamW) or L2 (SGD), not on BN and biases
    optimizer: str = 'adamw'       # 'adamw' or 'sgd' (momentum 0.9, nesterov)
    warmup: float = 1.0            # linear warm-up length, epochs
    min_lr_ratio: float = 0.05     # cosine decays to lr * min_lr_ratio
    quant: str = 'hwgq'            # 'float' (warm-up) or 'hwgq' (binary weights, 2-bit activations)
    net: str = ''                  # layer table (netdef.NETWORKS); '': --init's own table, else v1
    max_images: int = 0            # first N training images only (0: all)
    max_val_images: int = 0        # first N val images only (0: all)
    min_face: float = 0.0          # drop training faces smaller than this, original pixels
    workers: int = 2               # data loader processes per training process
    seed: int = 0                  # seeds data order, augmentation and initialisation
    bf16: bool = False             # bfloat16 autocast (CPU with AMX/AVX512-BF16, or GPU)
    grad_clip: float = 10.0        # max gradient norm
    ema: float = 0.0               # weight EMA decay per step (0: off); validation and best.pt use the average
    coord_scale: float = 1.0       # region loss weights, see model.loss.LossConfig
    obj_scale: float = 5.0
    noobj_scale: float = 1.0
    ignore_iou: float = 0.6


def parse_overrides(pairs: list[str], base: TrainConfig) -> TrainConfig:
    """Apply `key=value` strings (values parsed with ast.literal_eval) to `base`."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    changes: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition('=')
        if not sep:
            raise ConfigError(f'override {pair!r} is not KEY=VALUE')
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            raise ConfigError(f'unknown config key {key!r}' + (f'; did you mean {close[0]!r}?' if close else ''))
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text   # a bare word is a string
        want = type(getattr(base, key))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not want:
            raise ConfigError(f'config key {key!r} wants {want.__name__}, got {value!r}')
        changes[key] = value
    return dataclasses.replace(base, **changes)


def config_from_args(args) -> TrainConfig:
    """TrainConfig from the `train` command's flags, then `--set` overrides; checked."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    cfg = parse_overrides(args.set, cfg)
    try:
        netdef.check_input_size(cfg.img_size)
        netdef.check_input_size(cfg.val_size)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cfg.optimizer not in ('adamw', 'sgd'):
        raise ConfigError(f'optimizer must be adamw or sgd, not {cfg.optimizer!r}')
    if cfg.net and cfg.net not in netdef.NETWORKS:
        raise ConfigError(f'net must be one of {", ".join(netdef.NETWORKS)}, not {cfg.net!r}')
    if cfg.quant not in QUANT_MODES:
        raise ConfigError(f'quant must be one of {", ".join(QUANT_MODES)}, not {cfg.quant!r}')
    if cfg.epochs < 1 or cfg.batch < 1:
        raise ConfigError('epochs and batch must be >= 1')
    return cfg


# fields that may change between a run and its --resume without breaking exact continuation
RESUME_MAY_CHANGE = ('epochs', 'workers', 'max_val_images')


def check_resumable(ckpt: dict[str, Any], cfg: TrainConfig, path: Path) -> None:
    """Refuse to resume from a weights-only checkpoint or with a different training config."""
    missing = [k for k in ('optimizer', 'epoch', 'step', 'best') if k not in ckpt]
    if missing:
        raise ConfigError(f'{path}: holds no resume state ({", ".join(missing)} missing); use --init to start from it')
    saved = ckpt.get('config', {})
    changed = [f'{k} {saved[k]!r} -> {v!r}' for k, v in dataclasses.asdict(cfg).items()
               if k in saved and k not in RESUME_MAY_CHANGE and saved[k] != v]
    if changed:
        raise ConfigError(f'{path}: --resume with a different config ({"; ".join(changed)}); '
                          f'pass the original flags or start a new run with --init')


def remove_stale_temps(out: Path) -> None:
    """Delete temp files a killed save left behind (atomic writes never leave a partial target)."""
    for tmp in out.glob('.*.tmp'):
        tmp.unlink(missing_ok=True)


def lr_at(step: int, total: int, warmup: int, cfg: TrainConfig) -> float:
    """Linear warm-up for `warmup` steps, then cosine decay to lr * min_lr_ratio at `total`."""
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD; no weight decay on BatchNorm parameters and biases."""
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    no_decay = [p for n, p in model.named_parameters() if p.dim() <= 1]
    groups = [dict(params=decay, weight_decay=cfg.weight_decay), dict(params=no_decay, weight_decay=0.0)]
    if cfg.optimizer == 'sgd':
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


class WeightEma:
    """Exponential moving average of a model's state (weights and BatchNorm statistics).

    Quantized training is noisy from step to step (binary weights flip sign); the average is the
    model we validate and ship. The decay ramps up over the first steps of a run, as in TF's
    ExponentialMovingAverage(num_updates), so an early average is not pinned to the initial weights.
    """

    def __init__(self, model: torch.nn.Module, decay: float, state: dict[str, torch.Tensor] | None = None):
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in (state or model.state_dict()).items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.state[k].lerp_(v.detach(), 1 - d)
            else:   # counters such as BatchNorm's num_batches_tracked
                self.state[k].copy_(v)


def transplant(src: TinierYolo, dst: TinierYolo, log) -> TinierYolo:
    """Copy into `dst` every tensor of `src` with the same name and shape (a grown table keeps the
    trained layers it shares with the old one); the others keep their initialisation."""
    old, new = src.state_dict(), dst.state_dict()
    same = {k: v for k, v in old.items() if k in new and new[k].shape == v.shape}
    dst.load_state_dict({**new, **same})
    log(f'--init into another table: {len(same)} of {len(new)} tensors copied, new: '
        f'{", ".join(sorted({k.rsplit(".", 2)[0] for k in new if k not in same}))}')
    return dst.eval()


def setup_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device); initialises the process group under torchrun."""
    world = int(os.environ.get('WORLD_SIZE', '1'))
    if world > 1:
        backend = 'nccl' if torch.cuda.is_available() else 'gloo'
        dist.init_process_group(backend)
    rank = dist.get_rank() if world > 1 else 0
    if torch.cuda.is_available():
        local = int(os.environ.get('LOCAL_RANK', '0'))
        torch.cuda.set_device(local)
        return rank, world, torch.device('cuda', local)
    return rank, world, torch.device('cpu')


def train(wider_root: Path, out: Path, cfg: TrainConfig, resume: bool = False,
          init: Path | None = None, validate: bool = True, time_limit_min: float = 0,
          stop_after: int = 0) -> dict[str, Any]:
    """Train; returns the last metrics row. Writes out/last.pt, out/best.pt, out/metrics.jsonl.

    `time_limit_min` and `stop_after` (an epoch number) pause the run at an epoch boundary
    without changing its schedule, so `--resume` later continues it exactly.
    """
    rank, world, device = setup_distributed()
    main_proc = rank == 0
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if main_proc else (lambda msg: None)
    torch.manual_seed(cfg.seed)
    if out.exists() and not out.is_dir():
        raise ConfigError(f'--out {out}: exists and is not a folder')
    last_path, best_path, metrics_path = out / 'last.pt', out / 'best.pt', out / 'metrics.jsonl'

    items = read_wider(wider_root, 'train', min_size=cfg.min_face)
    if cfg.max_images:
        items = items[:cfg.max_images]
    dataset = WiderTrainSet(items, cfg.img_size, augment=True, seed=cfg.seed)
    if world > 1:
        sampler = DistributedSampler(dataset, world, rank, shuffle=True, seed=cfg.seed, drop_last=True)
    else:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(cfg.seed))
    per_proc = max(1, cfg.batch // world)
    loader = DataLoader(dataset, per_proc, sampler=sampler, num_workers=cfg.workers, collate_fn=collate,
                        drop_last=True, persistent_workers=False)
    if len(loader) == 0:
        raise ConfigError(f'{len(items)} training images are fewer than one batch of {per_proc}')
    val = None
    if validate and main_proc:
        from .validate import DevBenchmark
        val = DevBenchmark(wider_root, cfg.max_val_images)

    start_epoch, best, step, ckpt = 0, -math.inf, 0, None
    if resume and not last_path.is_file():
        log(f'--resume: no {last_path} yet, starting from the beginning')
    if resume and last_path.is_file():
        ckpt = load_checkpoint(last_path)
        check_resumable(ckpt, cfg, last_path)
        model = model_from_checkpoint(ckpt, cfg.quant, last_path)
        if 'train_model' in ckpt:   # 'model' holds the weight average, this the raw weights
            model.load_state_dict(model_state(ckpt, 'train_model'))
        start_epoch, best, step = int(ckpt['epoch']), float(ckpt['best']), int(ckpt['step'])
        log(f'resumed {last_path} at epoch {start_epoch}')
    elif init is not None:
        model = model_from_checkpoint(load_checkpoint(init), cfg.quant, init)
        if cfg.net and model.layers != netdef.NETWORKS[cfg.net]:
            model = transplant(model, TinierYolo(netdef.NETWORKS[cfg.net], quant=cfg.quant), log)
        log(f'initialised from {init}')
    else:
        model = TinierYolo(netdef.NETWORKS[cfg.net or 'v1'], quant=cfg.quant)
    opt = make_optimizer(model, cfg)
    if ckpt is not None:
        opt.load_state_dict(ckpt['optimizer'])
    out.mkdir(parents=True, exist_ok=True)   # only now: a refused checkpoint leaves no folder
    if main_proc:
        remove_stale_temps(out)
    model.to(device)
    net = DistributedDataParallel(model) if world > 1 else model
    # `shown` is the model validated and saved: the weight average when there is one
    ema, shown = None, model
    if cfg.ema:
        resumed_avg = model_state(ckpt) if ckpt is not None and 'train_model' in ckpt else None
        ema, shown = WeightEma(model, cfg.ema, resumed_avg), copy.deepcopy(model)
        ema.state = {k: v.to(device) for k, v in ema.state.items()}
    anchors = [torch.tensor(a, dtype=torch.float32, device=device) for a in model.head_anchors]
    loss_cfg = LossConfig(cfg.coord_scale, cfg.obj_scale, cfg.noobj_scale, cfg.ignore_iou)
    total_steps, warmup_steps = cfg.epochs * len(loader), max(1, round(cfg.warmup * len(loader)))
    log('config ' + json.dumps(dataclasses.asdict(cfg)))
    # keep the rows of completed epochs only, so a resumed run does not repeat lines
    rows = [r for r in (json.loads(l) for l in metrics_path.read_text().splitlines() if l.strip())
            if r['epoch'] <= start_epoch] if metrics_path.is_file() and main_proc else []
    t_start, row = time.time(), {}
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        dataset.set_epoch(epoch)
        if world > 1:
            sampler.set_epoch(epoch)
        else:
            sampler.generator.manual_seed(cfg.seed * 1000003 + epoch)
        sums: dict[str, float] = {}
        bar = tqdm(loader, desc=f'epoch {epoch + 1}/{cfg.epochs}', disable=not main_proc,
                   dynamic_ncols=True, file=sys.stderr)
        t_epoch = time.time()
        for images, targets in bar:
            for g in opt.param_groups:
                g['lr'] = lr_at(step, total_steps, warmup_steps, cfg)
            images, targets = images.to(device).float(), targets.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                heads = net(images)
            loss, parts = detection_loss([h.float() for h in heads], targets, anchors, loss_cfg)
            bad = torch.tensor(0.0 if torch.isfinite(loss) else 1.0)
            if world > 1:   # every process must stop together, or the others hang in all-reduce
                dist.all_reduce(bad)
            if bad.item():
                kept = f'last good checkpoint kept at {last_path}' if last_path.is_file() else 'no checkpoint written yet'
                value = loss.item() if not torch.isfinite(loss) else 'non-finite on another process'
                raise TrainingError(f'loss became {value} at epoch {epoch + 1} step {step}; {kept}')
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            if ema is not None:
                ema.update(model, step)
            step += 1
            for k, v in dict(loss=loss.item(), **parts).items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f'{loss.item():.3f}', lr=f'{opt.param_groups[0]["lr"]:.2e}')
        n = len(loader)
        row = dict(epoch=epoch + 1, step=step, quant=cfg.quant, img_size=cfg.img_size,
                   train_s=round(time.time() - t_epoch, 1),
                   images_per_s=round(n * cfg.batch / (time.time() - t_epoch), 2),
                   **{k: round(v / n, 5) for k, v in sums.items()})
        if main_proc:
            if ema is not None:
                shown.load_state_dict(ema.state)
            if val is not None:
                shown.eval()
                row.update(val.evaluate(shown, cfg.val_size))
            score = row.get('tpr@100fp', -row['loss'])
            improved = score > best
            best = max(best, score)
            extra = dict(optimizer=opt.state_dict(), epoch=epoch + 1, best=best, step=step)
            if ema is not None:
                extra['train_model'] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            # last.pt goes last: a kill before it re-runs this epoch, which rewrites the others
            if improved:
                save_checkpoint(best_path, shown, cfg.val_size, dataclasses.asdict(cfg), **extra)
            rows.append(row)
            atomic_write_text(metrics_path, ''.join(json.dumps(r) + '\n' for r in rows))
            save_checkpoint(last_path, shown, cfg.val_size, dataclasses.asdict(cfg), **extra)
            log('metrics ' + json.dumps(row))
        if world > 1:
            dist.barrier()
        out_of_time = bool(time_limit_min) and time.time() - t_start > time_limit_min * 60
        stop = torch.tensor(float(out_of_time or (stop_after and epoch + 1 >= stop_after)))
        if world > 1:   # rank 0's clock decides for everyone, or the others would wait forever
            dist.broadcast(stop, 0)
        if stop.item() and epoch + 1 < cfg.epochs:
            log(f'stopped after epoch {epoch + 1} of {cfg.epochs}; continue with --resume')
            break
    if world > 1:
        dist.destroy_process_group()
    return row


def cli_train(args) -> int:
    """`train` subcommand."""
    cfg = config_from_args(args)
    train(args.wider_root, args.out, cfg, resume=args.resume, init=args.init,
          validate=not args.no_val, time_limit_min=args.time_limit, stop_after=args.stop_after)
    return 0
