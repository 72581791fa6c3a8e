"""Training loop: WIDER FACE -> Tinier-YOLO quantization network, with checkpoints and resume.

The loop (`train`) reads top to bottom: build the data, start the model (resume, --init or
new), then per epoch `train_epoch` and `save_epoch` (validate, metrics, checkpoints).

Runs as one process or under `torchrun --nproc_per_node N` (DistributedDataParallel, gloo on
CPU, nccl on GPU). Every epoch: train, validate on the WIDER val subset (rank 0), write
`last.pt` atomically (and `best.pt` when validation improves), append to `metrics.jsonl`.
An epoch's data order and augmentation depend only on (seed, epoch), so `--resume` from the
last completed epoch continues exactly.
"""
from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from . import netdef
from .checkpoint import load_checkpoint, model_from_checkpoint, model_state, plain_state, save_checkpoint
from .datasets.augment import AugmentConfig
from .datasets.loader import WiderTrainSet, collate
from .datasets.wider import read_wider
from .errors import ConfigError, IfqError, TrainingError
from .fileio import atomic_write_text
from .model.loss import LossConfig, detection_loss, distill_loss, hint_loss
from .model.tinier_yolo import QUANT_MODES, TinierYolo
from .train_config import OPTIMIZERS, TrainConfig, parse_overrides

LAST, BEST, METRICS = 'last.pt', 'best.pt', 'metrics.jsonl'   # the files of a run folder


def config_from_args(args) -> TrainConfig:
    """TrainConfig from the `train` command's flags, then `--set` overrides; checked."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    cfg = parse_overrides(args.set, cfg)
    netdef.check_input_size(cfg.img_size)
    netdef.check_input_size(cfg.val_size, what='val_size')
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f'optimizer must be {" or ".join(OPTIMIZERS)}, not {cfg.optimizer!r}')
    if cfg.net and cfg.net not in netdef.NETWORKS:
        raise ConfigError(f'net must be one of {", ".join(netdef.NETWORKS)}, not {cfg.net!r}')
    if cfg.quant not in QUANT_MODES:
        raise ConfigError(f'quant must be one of {", ".join(QUANT_MODES)}, not {cfg.quant!r}')
    if cfg.tiny_faces < 0:
        raise ConfigError(f'tiny_faces is a size in pixels, >= 0, not {cfg.tiny_faces}')
    if not 0 < cfg.crop_min <= cfg.crop_max:
        raise ConfigError(f'crop_min and crop_max need 0 < crop_min <= crop_max, not {cfg.crop_min}, {cfg.crop_max}')
    if not 0 <= cfg.mosaic <= 1:
        raise ConfigError(f'mosaic is a probability in [0, 1], not {cfg.mosaic}')
    if cfg.hint and not cfg.teacher:
        raise ConfigError('hint (feature distillation) needs a teacher')
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


def ema_decay(decay: float, updates: int) -> float:
    """The EMA decay at update number `updates` (1: the first step's): it ramps up to `decay` as in
    TF's ExponentialMovingAverage(num_updates), so an early average is not pinned to the initial weights."""
    return min(decay, updates / (9 + updates))


def weight_average(model: torch.nn.Module, decay: float, step: int = 0) -> AveragedModel:
    """An exponential moving average of the model's weights and BatchNorm statistics (buffers).

    Quantized training is noisy from step to step (binary weights flip sign); the average is the
    model we validate and ship. The initial weights count as one update, so optimizer step s is
    update s + 1; `step` is the number of steps a resumed run has already taken.
    """
    def average(avg: torch.Tensor, new: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
        if not avg.is_floating_point():   # counters such as BatchNorm's num_batches_tracked
            return new
        return avg.lerp(new, 1 - ema_decay(decay, int(updates)))

    avg = AveragedModel(model, avg_fn=average, use_buffers=True)
    avg.n_averaged.fill_(step + 1)
    return avg.eval()


def _param_prefixes(model: TinierYolo) -> dict[str, str]:
    """Layer name -> the state_dict prefix of its parameters ('blocks.i' or 'heads.j')."""
    blocks = [l.name for l in model.layers if l.info.has_thresholds]
    heads = [l.name for l in model.layers if l.info.is_head]
    return {**{n: f'blocks.{i}' for i, n in enumerate(blocks)}, **{n: f'heads.{j}' for j, n in enumerate(heads)}}


def _narrowed_state(src: TinierYolo, dst: TinierYolo) -> tuple[dict[str, dict[str, torch.Tensor]], list[str]]:
    """src's parameters per layer name (suffix -> tensor) as dst's widths would hold them, and the
    layers made narrower. A block dst makes narrower keeps the output channels of largest
    |BatchNorm scale| (in their old order); every layer drops the input channels its inputs lost
    (upsampling passes its input's on)."""
    old, prefix = src.state_dict(), _param_prefixes(src)
    width = {l.name: l.out_ch for l in dst.layers}
    kept: dict[str, torch.Tensor] = {}
    state: dict[str, dict[str, torch.Tensor]] = {}
    narrowed = []
    for layer, src_idx in zip(src.layers, src.sources):
        inputs = [src.layers[j] for j in src_idx]
        kept[layer.name] = keep = torch.arange(layer.out_ch)
        if layer.info.upsamples:
            kept[layer.name] = kept[inputs[0].name]
            continue
        params = {k[len(prefix[layer.name]):]: v for k, v in old.items() if k.startswith(prefix[layer.name] + '.')}
        if inputs:
            starts = [sum(l.out_ch for l in inputs[:i]) for i in range(len(inputs))]
            in_keep = torch.cat([kept[l.name] + s for l, s in zip(inputs, starts)])
            params['.conv.weight'] = params['.conv.weight'][:, in_keep]
        if layer.info.has_thresholds and layer.out_ch > width.get(layer.name, layer.out_ch):
            gamma = params['.bn.weight'].abs()
            kept[layer.name] = keep = torch.argsort(gamma, descending=True)[:width[layer.name]].sort().values
            params = {k: v if v.dim() == 0 else v[keep] for k, v in params.items()}
            narrowed.append(layer.name)
        state[layer.name] = params
    return state, narrowed


def _widened(rows: dict[str, torch.Tensor], mine: dict[str, torch.Tensor], old_widths: list[int],
             new_widths: list[int], zero_new_inputs: bool) -> dict[str, torch.Tensor] | None:
    """A layer's old tensors `rows` placed in its new ones `mine` (suffix -> tensor): the old output
    channels first, each old input (widths `old_widths`, concatenated) at the start of its new
    input (`new_widths`, which may append inputs); the rest keeps `mine`'s values, except new input
    channels, which are zeroed if `zero_new_inputs`. None where an old tensor does not fit."""
    out = {}
    for k, v in mine.items():
        r = rows.get(k)
        if r is None or r.dim() != v.dim() or any(a > b for a, b in zip(r.shape, v.shape)):
            return None
        if r.shape == v.shape:
            out[k] = r
            continue
        t = v.clone()
        if k == '.conv.weight':
            starts = [sum(new_widths[:i]) for i in range(len(new_widths))]
            # the first layer reads the image: no named inputs, the same channels
            old_in = torch.cat([torch.arange(w) + s for w, s in zip(old_widths, starts)]) if old_widths \
                else torch.arange(r.shape[1])
            if len(old_in) != r.shape[1]:
                return None
            if zero_new_inputs:
                new_in = torch.ones(v.shape[1], dtype=torch.bool)
                new_in[old_in] = False
                t[:, new_in] = 0
            t[:r.shape[0], old_in] = r
        else:
            t[:r.shape[0]] = r
        out[k] = t
    return out


def _same_role(a: netdef.LayerSpec, b: netdef.LayerSpec) -> bool:
    """Same kind, or two blocks on codes that differ only in weight precision (binary, int8): the
    latent float weights of one initialise the other."""
    both_on_codes = all(l.info.has_thresholds and not l.info.reads_image for l in (a, b))
    return a.kind == b.kind or both_on_codes


def transplant(src: TinierYolo, dst: TinierYolo, log) -> TinierYolo:
    """Grow (or reshape) a trained network into another table, layer by layer name.

    A layer of both tables with the same role (`_same_role`) and inputs keeps its trained weights: all of them,
    or, where dst makes a block narrower, the channels of largest |BatchNorm scale| (the layers
    reading it drop the matching input channels); where dst makes a block wider or appends inputs,
    the old channels keep their weights and the new input channels get zero weights where the
    weights are float or int8 (a head then computes what it did; `_widened`). A head with other
    anchors takes the channels of every anchor an old head at the same stride had (a head may keep
    some of its anchors and hand others to a new head). In float mode a new block with as many
    outputs as inputs starts as the identity (its kernel's centre tap; Net2DeeperNet), so the
    deeper network begins close to where the old one was. The rest keeps its initialisation.
    """
    new, prefix = dst.state_dict(), _param_prefixes(dst)
    theirs, narrowed = _narrowed_state(src, dst)
    src_layers = {l.name: (l, tuple(src.layers[j].name for j in s)) for l, s in zip(src.layers, src.sources)}
    src_heads = [(l.name, st, l.anchors) for l, st in zip(src.layers, netdef.strides(src.layers)) if l.info.is_head]
    per, out, moved, grown, extended, widened = netdef.VALUES_PER_ANCHOR, {}, 0, [], [], []
    width = {l.name: l.out_ch for l in dst.layers}
    src_width = {l.name: l.out_ch for l in src.layers}
    for layer, stride, sources in zip(dst.layers, netdef.strides(dst.layers), dst.sources):
        if layer.name not in prefix:
            continue                                                # no parameters (upsample)
        to = prefix[layer.name]
        mine = {k[len(to):]: v for k, v in new.items() if k.startswith(to + '.')}
        same = src_layers.get(layer.name, (None, None))
        names = tuple(dst.layers[j].name for j in sources)
        if same[0] is not None and _same_role(same[0], layer) and names[:len(same[1])] == same[1]:
            # a binary weight has no zero: new input channels of a binary layer keep their fresh weights
            zero = dst.quant == 'float' or layer.weight_bits > netdef.BINARY_WEIGHT_BITS
            rows = _widened(theirs[layer.name], mine, [min(src_width[n], width[n]) for n in same[1]],
                            [width[n] for n in names], zero)
            if rows is not None:
                out.update({to + k: v for k, v in rows.items()})
                if len(names) > len(same[1]):
                    extended.append(layer.name)
                if layer.out_ch > src_width[layer.name]:
                    widened.append(layer.name)
                continue
        if layer.info.is_head:                                      # anchors an old head at this stride had
            rows, took = {k: v.clone() for k, v in mine.items()}, 0
            for a, anchor in enumerate(layer.anchors):
                for name, st, anchors in src_heads:
                    if st == stride and anchor in anchors and theirs[name]['.conv.weight'].shape[1:] == \
                            rows['.conv.weight'].shape[1:]:
                        b = anchors.index(anchor)
                        for k in rows:
                            rows[k][a * per:(a + 1) * per] = theirs[name][k][b * per:(b + 1) * per]
                        took += 1
            if took:
                out.update({to + k: v for k, v in rows.items()})
                moved += took
        elif layer.info.has_thresholds and dst.quant == 'float' and mine['.conv.weight'].shape[:2] == (
                layer.out_ch, layer.out_ch):
            w = torch.zeros_like(mine['.conv.weight'])
            centre = layer.kernel // 2
            w[torch.arange(layer.out_ch), torch.arange(layer.out_ch), centre, centre] = 1
            out[to + '.conv.weight'] = w
            grown.append(layer.name)
    dst.load_state_dict({**new, **out})
    log(f'--init into another table: {len(out)} of {len(new)} tensors copied ({moved} anchors into heads of other '
        f'anchors or inputs; narrowed: {", ".join(narrowed) or "none"}; identity: {", ".join(grown) or "none"}; '
        f'more inputs: {", ".join(extended) or "none"}; wider: {", ".join(widened) or "none"}), '
        f'new: {", ".join(sorted({k.rsplit(".", 2)[0] for k in new if k not in out}))}')
    return dst.eval()


def load_teacher(cfg: TrainConfig, layers: tuple[netdef.LayerSpec, ...], device: torch.device,
                 log) -> TinierYolo | None:
    """The frozen network of cfg.teacher (eval mode, its own quantization), which must have the
    trained network's heads (strides and anchors; the layers before them may differ, e.g. in
    weight precision); None without a teacher."""
    if not cfg.teacher:
        return None
    path = Path(cfg.teacher)
    teacher = model_from_checkpoint(load_checkpoint(path), None, path)
    if any(f(teacher.layers) != f(layers) for f in (netdef.head_strides, netdef.anchors_of)):
        raise ConfigError(f'--teacher {path}: its heads (strides or anchors) differ from the trained network\'s')
    log(f'distilling from {path} ({teacher.quant}), weight {cfg.distill}')
    return teacher.requires_grad_(False).to(device).eval()


class BlockOutputs:
    """Keeps what the activation of the named blocks reads (their BatchNorm output) from each forward
    pass (feature hints); a quantized teacher in eval mode computes it without calling BatchNorm."""

    def __init__(self, model: TinierYolo, names: list[str]):
        self.names, self.values = names, {}
        for block in model.blocks:
            if block.spec.name in names:
                block.pre_act.register_forward_hook(self._keep(block.spec.name))

    def _keep(self, name: str):
        def hook(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            self.values[name] = output
        return hook

    def taken(self) -> list[torch.Tensor]:
        """The outputs of the last forward pass, in `names` order, as float32."""
        return [self.values.pop(n).float() for n in self.names]


def hint_pairs(model: TinierYolo, teacher: TinierYolo | None, log) -> tuple[BlockOutputs, BlockOutputs] | None:
    """Recorders of the blocks that student and teacher share (same name and width); None without a teacher."""
    if teacher is None:
        return None
    theirs = {b.spec.name: b.spec.out_ch for b in teacher.blocks}
    names = [b.spec.name for b in model.blocks if theirs.get(b.spec.name) == b.spec.out_ch]
    if not names:
        raise ConfigError('hint: the teacher has no block of the same name and width as the trained network')
    log(f'feature hints on {", ".join(names)}')
    return BlockOutputs(model, names), BlockOutputs(teacher, names)


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


class Data(NamedTuple):
    """The training set, its sampler and loader."""
    dataset: WiderTrainSet
    sampler: RandomSampler | DistributedSampler
    loader: DataLoader


def build_data(wider_root: Path, cfg: TrainConfig, rank: int, world: int) -> Data:
    """The augmented WIDER train split, shuffled by a seeded sampler (one shard per process under DDP)."""
    items = read_wider(wider_root, 'train', min_size=cfg.min_face)
    if cfg.max_images:
        items = items[:cfg.max_images]
    dataset = WiderTrainSet(items, cfg.img_size, augment=True, seed=cfg.seed,
                            config=AugmentConfig(window_range=(cfg.crop_min, cfg.crop_max),
                                                 max_angle=cfg.rotate, mosaic_p=cfg.mosaic))
    if world > 1:
        sampler = DistributedSampler(dataset, world, rank, shuffle=True, seed=cfg.seed, drop_last=True)
    else:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(cfg.seed))
    per_proc = max(1, cfg.batch // world)
    loader = DataLoader(dataset, per_proc, sampler=sampler, num_workers=cfg.workers, collate_fn=collate,
                        drop_last=True, persistent_workers=False)
    if len(loader) == 0:
        raise ConfigError(f'{len(items)} training images are fewer than one batch of {per_proc}')
    return Data(dataset, sampler, loader)


def set_epoch(data: Data, epoch: int, seed: int) -> None:
    """Fix an epoch's data order and augmentation: a function of (seed, epoch) only."""
    data.dataset.set_epoch(epoch)
    if isinstance(data.sampler, DistributedSampler):
        data.sampler.set_epoch(epoch)
    else:
        data.sampler.generator.manual_seed(seed * 1000003 + epoch)


class Start(NamedTuple):
    """Where a run starts."""
    model: TinierYolo               # the raw (not averaged) weights to train
    ckpt: dict[str, Any] | None     # the resumed checkpoint, None for a new run
    epoch: int                      # epochs already done
    step: int                       # optimizer steps already taken
    best: float                     # best validation score so far


def start_model(cfg: TrainConfig, last_path: Path, resume: bool, init: Path | None, log) -> Start:
    """Resume from last.pt, or start from --init (grown into cfg.net's table), or from scratch."""
    if resume and not last_path.is_file():
        log(f'--resume: no {last_path} yet, starting from the beginning')
    if resume and last_path.is_file():
        ckpt = load_checkpoint(last_path)
        check_resumable(ckpt, cfg, last_path)
        model = model_from_checkpoint(ckpt, cfg.quant, last_path)
        if 'train_model' in ckpt:   # 'model' holds the weight average, this the raw weights
            model.load_state_dict(model_state(ckpt, 'train_model'))
        log(f'resumed {last_path} at epoch {int(ckpt["epoch"])}')
        return Start(model, ckpt, int(ckpt['epoch']), int(ckpt['step']), float(ckpt['best']))
    if init is not None:
        model = model_from_checkpoint(load_checkpoint(init), cfg.quant, init)
        if cfg.net and model.layers != netdef.NETWORKS[cfg.net]:
            model = transplant(model, TinierYolo(netdef.NETWORKS[cfg.net], quant=cfg.quant), log)
        log(f'initialised from {init}')
    else:
        model = TinierYolo(netdef.NETWORKS[cfg.net or 'v1'], quant=cfg.quant)
    return Start(model, None, 0, 0, -math.inf)


@dataclass(frozen=True)
class Trainer:
    """What a training step needs, fixed for the whole run."""
    cfg: TrainConfig
    model: TinierYolo               # the raw weights
    net: torch.nn.Module            # `model`, or its DistributedDataParallel wrapper
    opt: torch.optim.Optimizer
    avg: AveragedModel | None       # the weight average (cfg.ema), else None
    anchors: list[torch.Tensor]     # per head (A, 2) float32, grid cells
    teacher: TinierYolo | None      # the float network distilled into this one (cfg.teacher), else None
    hints: tuple[BlockOutputs, BlockOutputs] | None   # student's and teacher's block outputs (cfg.hint), else None
    loss_cfg: LossConfig
    device: torch.device
    world: int                      # processes
    total_steps: int                # of the whole schedule
    warmup_steps: int


def check_finite(t: Trainer, loss: torch.Tensor, epoch: int, step: int, last_path: Path) -> None:
    """TrainingError when the loss of any process is NaN or infinite; all processes stop together."""
    bad = torch.tensor(0.0 if torch.isfinite(loss) else 1.0)
    if t.world > 1:   # every process must stop together, or the others hang in all-reduce
        dist.all_reduce(bad)
    if bad.item():
        kept = f'last good checkpoint kept at {last_path}' if last_path.is_file() else 'no checkpoint written yet'
        value = loss.item() if not torch.isfinite(loss) else 'non-finite on another process'
        raise TrainingError(f'loss became {value} at epoch {epoch + 1} step {step}; {kept}')


def train_epoch(t: Trainer, loader: DataLoader, epoch: int, step: int, show: bool,
                last_path: Path) -> tuple[dict[str, float], int]:
    """One pass over the loader from optimizer step `step`: (summed loss parts, the step after it)."""
    t.model.train()
    sums: dict[str, float] = {}
    bar = tqdm(loader, desc=f'epoch {epoch + 1}/{t.cfg.epochs}', disable=not show, dynamic_ncols=True,
               file=sys.stderr)
    for batch in bar:
        if isinstance(batch, IfqError):   # a sample failed in a loader worker (datasets.loader.collate)
            raise batch
        images, targets = batch
        for g in t.opt.param_groups:
            g['lr'] = lr_at(step, t.total_steps, t.warmup_steps, t.cfg)
        images, targets = images.to(t.device).float(), targets.to(t.device)
        if t.cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(t.device.type, dtype=torch.bfloat16, enabled=t.cfg.bf16):
            heads = t.net(images)
        loss, parts = detection_loss([h.float() for h in heads], targets, t.anchors, t.loss_cfg)
        if t.teacher is not None:
            with torch.no_grad():
                taught = t.teacher(images)   # also fills the teacher's block outputs for the hints
        if t.teacher is not None and t.cfg.distill:
            hint = distill_loss([h.float() for h in heads], taught)
            loss = loss + t.cfg.distill * hint
            parts['distill'] = hint.item()
        if t.hints is not None:
            mine, theirs = t.hints
            features = hint_loss(mine.taken(), theirs.taken())
            loss = loss + t.cfg.hint * features
            parts['hint'] = features.item()
        check_finite(t, loss, epoch, step, last_path)
        t.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(t.model.parameters(), t.cfg.grad_clip)
        t.opt.step()
        if t.avg is not None:
            t.avg.update_parameters(t.model)
        step += 1
        for k, v in dict(loss=loss.item(), **parts).items():
            sums[k] = sums.get(k, 0.0) + v
        bar.set_postfix(loss=f'{loss.item():.3f}', lr=f'{t.opt.param_groups[0]["lr"]:.2e}')
    return sums, step


def completed_rows(metrics_path: Path, epochs_done: int) -> list[dict[str, Any]]:
    """The metrics rows of completed epochs, so a resumed run does not repeat lines."""
    if not metrics_path.is_file():
        return []
    rows = (json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip())
    return [r for r in rows if r['epoch'] <= epochs_done]


def save_epoch(t: Trainer, out: Path, val, row: dict[str, Any], rows: list[dict[str, Any]], best: float,
               epoch: int, step: int) -> float:
    """Validate the shown model (the average when there is one) into `row`, append it to
    metrics.jsonl, write best.pt if it improved, then last.pt; returns the best score."""
    shown = t.avg.module if t.avg is not None else t.model
    if val is not None:
        shown.eval()
        row.update(val.evaluate(shown, t.cfg.val_size))
    score = row.get('tpr@100fp', -row['loss'])
    improved = score > best
    best = max(best, score)
    extra = dict(optimizer=t.opt.state_dict(), epoch=epoch + 1, best=best, step=step)
    if t.avg is not None:
        extra['train_model'] = plain_state(t.model)
    config = dataclasses.asdict(t.cfg)
    # last.pt goes last: a kill before it re-runs this epoch, which rewrites the others
    if improved:
        save_checkpoint(out / BEST, shown, t.cfg.val_size, config, **extra)
    rows.append(row)
    atomic_write_text(out / METRICS, ''.join(json.dumps(r) + '\n' for r in rows))
    save_checkpoint(out / LAST, shown, t.cfg.val_size, config, **extra)
    return best


def next_epoch_overruns(t_start: float, t_epoch: float, now: float, limit_min: float) -> bool:
    """Whether another epoch, taken to last as long as the one that began at `t_epoch`, would end
    past `limit_min` minutes from `t_start` (0: no limit). Checked only at epoch boundaries, so the
    limit holds where epochs take alike."""
    return bool(limit_min) and now + (now - t_epoch) - t_start > limit_min * 60


def stop_now(world: int, out_of_time: bool, stop_after: int, epochs_done: int) -> bool:
    """Whether to pause after this epoch; rank 0's clock decides for every process."""
    stop = torch.tensor(float(out_of_time or (stop_after and epochs_done >= stop_after)))
    if world > 1:   # or the others would wait forever
        dist.broadcast(stop, 0)
    return bool(stop.item())


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
    data = build_data(wider_root, cfg, rank, world)
    val = None
    if validate and main_proc:
        from .validate import DevBenchmark
        val = DevBenchmark(wider_root, cfg.max_val_images)
    start = start_model(cfg, out / LAST, resume, init, log)
    model = start.model
    teacher = load_teacher(cfg, model.layers, device, log)
    opt = make_optimizer(model, cfg)
    if start.ckpt is not None:
        opt.load_state_dict(start.ckpt['optimizer'])
    out.mkdir(parents=True, exist_ok=True)   # only now: a refused checkpoint leaves no folder
    if main_proc:
        remove_stale_temps(out)
    model.to(device, memory_format=torch.channels_last if cfg.channels_last else torch.preserve_format)
    avg = weight_average(model, cfg.ema, start.step) if cfg.ema else None
    if avg is not None and start.ckpt is not None and 'train_model' in start.ckpt:
        avg.module.load_state_dict(model_state(start.ckpt))   # a resumed run's average
    n = len(data.loader)
    loss_cfg = LossConfig(cfg.coord_scale, cfg.obj_scale, cfg.noobj_scale, cfg.ignore_iou, cfg.box_loss, cfg.rescore,
                          cfg.anchor_iou, cfg.obj_loss, cfg.tiny_faces / cfg.img_size)
    t = Trainer(cfg, model, DistributedDataParallel(model) if world > 1 else model, opt, avg,
                [torch.tensor(a, dtype=torch.float32, device=device) for a in model.head_anchors],
                teacher, hint_pairs(model, teacher, log) if cfg.hint else None,
                loss_cfg, device, world, total_steps=cfg.epochs * n, warmup_steps=max(1, round(cfg.warmup * n)))
    log('config ' + json.dumps(dataclasses.asdict(cfg)))
    rows = completed_rows(out / METRICS, start.epoch) if main_proc else []
    t_start, row, step, best = time.time(), {}, start.step, start.best
    for epoch in range(start.epoch, cfg.epochs):
        set_epoch(data, epoch, cfg.seed)
        t_epoch = time.time()
        sums, step = train_epoch(t, data.loader, epoch, step, main_proc, out / LAST)
        row = dict(epoch=epoch + 1, step=step, quant=cfg.quant, img_size=cfg.img_size,
                   train_s=round(time.time() - t_epoch, 1),
                   images_per_s=round(n * cfg.batch / (time.time() - t_epoch), 2),
                   **{k: round(v / n, 5) for k, v in sums.items()})
        if main_proc:
            best = save_epoch(t, out, val, row, rows, best, epoch, step)
            log('metrics ' + json.dumps(row))
        if world > 1:
            dist.barrier()
        out_of_time = next_epoch_overruns(t_start, t_epoch, time.time(), time_limit_min)
        if stop_now(world, out_of_time, stop_after, epoch + 1) and epoch + 1 < cfg.epochs:
            log(f'stopped after epoch {epoch + 1} of {cfg.epochs}; continue with --resume')
            break
    if world > 1:
        # DDP's reducer holds the group: drop it, and let every process finish its last collective,
        # before the group shuts down (a rank shutting down mid-exchange aborted the other in CI)
        del t
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()
    return row


def cli_train(args) -> int:
    """`train` subcommand."""
    cfg = config_from_args(args)
    train(args.wider_root, args.out, cfg, resume=args.resume, init=args.init,
          validate=not args.no_val, time_limit_min=args.time_limit, stop_after=args.stop_after)
    return 0
