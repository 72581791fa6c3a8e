"""YOLOv2 region loss with darknet semantics, one class (face).

Per ground-truth face: the cell holding its centre and the anchor of best shape IoU are
responsible (optionally also every anchor of close shape, `anchor_iou`); targets are
sigmoid(tx) = frac(cx), tw = log(w / anchor_w) (grid units); the coordinate terms are weighted
by (2 - w*h). Objectness is pushed to 1 on responsible anchors and to 0 elsewhere, except
where the predicted box already overlaps some face by more than `ignore_iou` (no-object loss
ignored there). Squared errors, as darknet (or a quality focal loss on objectness, `obj_loss`);
summed, / batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..netdef import (EXP_CLAMP, HWGQ_CLIP, H_FIELD, OBJECTNESS_FIELD, VALUES_PER_ANCHOR, W_FIELD, X_FIELD,
                      Y_FIELD)


@dataclass(frozen=True)
class LossConfig:
    coord_scale: float = 1.0   # weight of x, y, w, h errors
    obj_scale: float = 5.0     # weight of objectness on responsible anchors
    noobj_scale: float = 1.0   # weight of objectness elsewhere
    ignore_iou: float = 0.6    # no-object loss ignored above this IoU with any face
    box_loss: str = 'mse'      # 'mse': darknet's squared errors of tx, ty, tw, th; 'giou': 1 - GIoU of the box
    rescore: bool = False      # darknet's rescore: objectness trained toward the predicted box's IoU, not 1
    anchor_iou: float = 1.0    # besides its best anchor, a face also trains every anchor (of any head) whose
                               # shape IoU with it exceeds this; 1: the best only (darknet)
    obj_loss: str = 'mse'      # 'mse': darknet's squared error of sigmoid(objectness); 'qfocal': quality focal
                               # loss (Li et al. 2020), cross-entropy weighted by (target - sigmoid)^2
    tiny: float = 0.0          # faces whose longer side is under this fraction of the input side train no
                               # anchor, and the cell of each trains no objectness on any anchor (0: none)


def objectness_loss(logit: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-element objectness loss of raw logits toward targets in [0, 1]. The squared error of a
    sigmoid has almost no gradient where the network is confidently wrong (a hand scored 0.9 pulls
    with 2 * 0.9 * 0.9 * 0.1); the focal cross-entropy keeps pulling there (about 0.9 ** 3) and
    lets the many easy cells (scores near their target) fade."""
    p = logit.sigmoid()
    if kind == 'mse':
        return (p - target) ** 2
    if kind == 'qfocal':
        return (target - p) ** 2 * F.binary_cross_entropy_with_logits(logit, target, reduction='none')
    raise ValueError(f'unknown objectness loss {kind!r}')


def box_iou_cxcywh(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU matrix (N, M) of boxes given as (cx, cy, w, h)."""
    a1, a2 = a[:, None, :2] - a[:, None, 2:] / 2, a[:, None, :2] + a[:, None, 2:] / 2
    b1, b2 = b[None, :, :2] - b[None, :, 2:] / 2, b[None, :, :2] + b[None, :, 2:] / 2
    inter = (torch.minimum(a2, b2) - torch.maximum(a1, b1)).clamp(min=0).prod(-1)
    union = a[:, None, 2:].prod(-1) + b[None, :, 2:].prod(-1) - inter
    return inter / union.clamp(min=1e-12)


def giou_cxcywh(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(IoU, generalized IoU) (N,) of paired boxes (N, 4) given as (cx, cy, w, h) (Rezatofighi et al. 2019)."""
    a1, a2 = a[:, :2] - a[:, 2:] / 2, a[:, :2] + a[:, 2:] / 2
    b1, b2 = b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2
    inter = (torch.minimum(a2, b2) - torch.maximum(a1, b1)).clamp(min=0).prod(-1)
    union = a[:, 2:].prod(-1) + b[:, 2:].prod(-1) - inter
    iou = inter / union.clamp(min=1e-12)
    hull = (torch.maximum(a2, b2) - torch.minimum(a1, b1)).prod(-1).clamp(min=1e-12)
    return iou, iou - (hull - union) / hull


def shape_iou(wh: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """IoU (N, A) of boxes and anchors sharing one centre, from (w, h) only."""
    inter = torch.minimum(wh[:, None, 0], anchors[None, :, 0]) * torch.minimum(wh[:, None, 1], anchors[None, :, 1])
    return inter / (wh[:, None].prod(-1) + anchors[None].prod(-1) - inter)


def region_loss(out: torch.Tensor, targets: torch.Tensor, anchors: torch.Tensor,
                cfg: LossConfig = LossConfig(), assign: torch.Tensor | None = None,
                dont_care: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """out: (B, A*5, H, W) raw head; targets: (M, 5) [batch_index, cx, cy, w, h] in [0, 1];
    anchors: (A, 2) in grid cells. Returns (loss, parts) with parts summed per term, / B.

    assign: (M,) the anchor of this head responsible for each face, -1 where another head is;
    None: the anchor of best shape IoU. Every face counts for the ignore mask either way.
    dont_care: (K, 5) faces as targets whose cells train no objectness on any anchor.
    """
    bsz, _, gh, gw = out.shape
    na = anchors.shape[0]
    p = out.float().view(bsz, na, VALUES_PER_ANCHOR, gh, gw).permute(0, 1, 3, 4, 2)  # (B, A, H, W, 5)
    sx, sy, tw, th = p[..., X_FIELD].sigmoid(), p[..., Y_FIELD].sigmoid(), p[..., W_FIELD], p[..., H_FIELD]
    logit = p[..., OBJECTNESS_FIELD]

    # predicted boxes in grid units, for the ignore mask only
    with torch.no_grad():
        cols = torch.arange(gw, device=out.device).view(1, 1, 1, gw)
        rows = torch.arange(gh, device=out.device).view(1, 1, gh, 1)
        pred = torch.stack([cols + sx, rows + sy,
                            tw.clamp(max=EXP_CLAMP).exp() * anchors[:, 0].view(1, na, 1, 1),
                            th.clamp(max=EXP_CLAMP).exp() * anchors[:, 1].view(1, na, 1, 1)], -1)  # (B, A, H, W, 4)
        gt = targets[:, 1:] * targets.new_tensor([gw, gh, gw, gh])   # (M, 4) grid units
        bidx = targets[:, 0].long()
        noobj = torch.ones_like(logit)
        for b in range(bsz):
            faces = gt[bidx == b]
            if len(faces):
                best = box_iou_cxcywh(pred[b].reshape(-1, 4), faces).amax(1).view(na, gh, gw)
                noobj[b][best > cfg.ignore_iou] = 0
        if dont_care is not None and len(dont_care):
            ci = (dont_care[:, 1] * gw).long().clamp(0, gw - 1)
            cj = (dont_care[:, 2] * gh).long().clamp(0, gh - 1)
            noobj[dont_care[:, 0].long(), :, cj, ci] = 0

        # responsible (image, anchor, row, col); where two faces collide the last one wins
        ga = shape_iou(gt[:, 2:], anchors).argmax(1) if assign is None else assign
        mine = ga >= 0
        gt, bidx, ga = gt[mine], bidx[mine], ga[mine]
        gi = gt[:, 0].long().clamp(0, gw - 1)
        gj = gt[:, 1].long().clamp(0, gh - 1)
        key = ((bidx * na + ga) * gh + gj) * gw + gi
        uniq, inverse = torch.unique(key, return_inverse=True)
        last = torch.full((len(uniq),), -1, dtype=torch.long, device=out.device)
        last = last.scatter_reduce(0, inverse, torch.arange(len(key), device=out.device), 'amax')
        bidx, ga, gj, gi, gt = bidx[last], ga[last], gj[last], gi[last], gt[last]
        noobj[bidx, ga, gj, gi] = 0
        tx, ty = gt[:, 0] - gi, gt[:, 1] - gj
        tw_t = torch.log(gt[:, 2] / anchors[ga, 0])
        th_t = torch.log(gt[:, 3] / anchors[ga, 1])
        weight = 2 - (gt[:, 2] / gw) * (gt[:, 3] / gh)

    sel = (bidx, ga, gj, gi)
    box = torch.stack([gi + sx[sel], gj + sy[sel], tw[sel].clamp(max=EXP_CLAMP).exp() * anchors[ga, 0],
                       th[sel].clamp(max=EXP_CLAMP).exp() * anchors[ga, 1]], -1)   # (N, 4) grid units
    iou, giou = giou_cxcywh(box, gt)
    if cfg.box_loss == 'giou':
        loss_xy = cfg.coord_scale * (weight * (1 - giou)).sum()
        loss_wh = loss_xy.new_zeros(())
    else:
        loss_xy = cfg.coord_scale * (weight * ((sx[sel] - tx) ** 2 + (sy[sel] - ty) ** 2)).sum()
        loss_wh = cfg.coord_scale * (weight * ((tw[sel] - tw_t) ** 2 + (th[sel] - th_t) ** 2)).sum()
    target = iou.detach().clamp(min=0) if cfg.rescore else torch.ones_like(iou)
    loss_obj = cfg.obj_scale * objectness_loss(logit[sel], target, cfg.obj_loss).sum()
    loss_noobj = cfg.noobj_scale * (noobj * objectness_loss(logit, torch.zeros_like(logit), cfg.obj_loss)).sum()
    total = (loss_xy + loss_wh + loss_obj + loss_noobj) / bsz
    parts = {k: float(v.detach()) / bsz for k, v in
             dict(xy=loss_xy, wh=loss_wh, obj=loss_obj, noobj=loss_noobj).items()}
    parts['iou_sum'] = float(iou.detach().sum()) / bsz        # mean IoU of the responsible boxes: iou_sum / faces
    parts['faces'] = len(iou) / bsz
    return total, parts


def assign_heads(targets: torch.Tensor, head_anchors: list[torch.Tensor], grids: list[int],
                 anchor_iou: float = 1.0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Faces to anchors across all heads: each to its anchor of best shape IoU, and also to every
    anchor whose shape IoU exceeds `anchor_iou` (a second chance for faces between two anchor
    sizes, and for crowded faces that collide in one cell and anchor). targets (M, 5) as
    region_loss; head_anchors: (A_h, 2) in each head's grid cells; grids: each head's cells per side.
    Returns (targets (M', 5), one row per face and anchor, and per head (M',) the responsible
    anchor index, -1 for rows of other heads)."""
    wh = targets[:, 3:5]                                                    # fractions of the input side
    ious = torch.cat([shape_iou(wh, a / g) for a, g in zip(head_anchors, grids)], 1)   # (M, sum A_h)
    chosen = ious > anchor_iou
    if len(wh):
        chosen[torch.arange(len(wh), device=targets.device), ious.argmax(1)] = True
    face, flat = chosen.nonzero(as_tuple=True)                              # by face, then anchor
    out, start = [], 0
    for a in head_anchors:
        local = flat - start
        out.append(torch.where((local >= 0) & (local < len(a)), local, torch.full_like(local, -1)))
        start += len(a)
    return targets[face], out


def detection_loss(outs: list[torch.Tensor], targets: torch.Tensor, head_anchors: list[torch.Tensor],
                   cfg: LossConfig = LossConfig()) -> tuple[torch.Tensor, dict[str, float]]:
    """The region loss summed over heads, each face trained on the anchors `assign_heads` gives it
    (by default the one anchor, of any head, of best shape IoU). A single head with the default
    `anchor_iou` gives exactly `region_loss`. Faces under `cfg.tiny` of the input side are don't-care
    regions on every head (a face of a few pixels teaches the network to fire on blobs)."""
    tiny = targets[:, 3:5].amax(1) < cfg.tiny
    targets, dont_care = targets[~tiny], targets[tiny]
    if len(outs) == 1 and cfg.anchor_iou >= 1:
        return region_loss(outs[0], targets, head_anchors[0], cfg, dont_care=dont_care)
    targets, assigns = assign_heads(targets, head_anchors, [o.shape[-1] for o in outs], cfg.anchor_iou)
    total, parts = 0.0, {}
    for out, anchors, assign in zip(outs, head_anchors, assigns):
        loss, p = region_loss(out, targets, anchors, cfg, assign, dont_care)
        total = total + loss
        for k, v in p.items():
            parts[k] = parts.get(k, 0.0) + v
    return total, parts


DECODED_SIGMOID = [X_FIELD, Y_FIELD, OBJECTNESS_FIELD]   # fields the decoder passes through a sigmoid
DECODED_EXP = [W_FIELD, H_FIELD]                          # and through exp (clamped to EXP_CLAMP)


def distill_loss(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Knowledge distillation from a float network's heads (same table): squared errors of what the
    decoder reads, sigmoid(x), sigmoid(y), sigmoid(objectness) and the clamped tw, th, over every
    cell and anchor of every head; summed, / batch. The teacher's scores on background teach the
    binary network which non-faces look like faces, which the region loss says only as 0."""
    total = 0.0
    for s, t in zip(student, teacher):
        if s.shape != t.shape:
            raise ValueError(f'student head {tuple(s.shape)} and teacher head {tuple(t.shape)} differ')
        b, _, h, w = s.shape
        s, t = s.view(b, -1, VALUES_PER_ANCHOR, h, w), t.detach().view(b, -1, VALUES_PER_ANCHOR, h, w)
        sig, exp = DECODED_SIGMOID, DECODED_EXP
        total = total + ((s[:, :, sig].sigmoid() - t[:, :, sig].sigmoid()) ** 2).sum() \
            + ((s[:, :, exp].clamp(max=EXP_CLAMP) - t[:, :, exp].clamp(max=EXP_CLAMP)) ** 2).sum()
    return total / student[0].shape[0]


def hint_loss(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Feature distillation (FitNets-style hints) from a float network: squared errors between the
    blocks' BatchNorm outputs, clamped to [0, HWGQ_CLIP] (the range in which the HWGQ code, the ReLU
    and the straight-through gradient all vary), mean over elements, summed over the blocks."""
    total = 0.0
    for s, t in zip(student, teacher):
        if s.shape != t.shape:
            raise ValueError(f'student block {tuple(s.shape)} and teacher block {tuple(t.shape)} differ')
        total = total + ((s.clamp(0.0, HWGQ_CLIP) - t.detach().clamp(0.0, HWGQ_CLIP)) ** 2).mean()
    return total
