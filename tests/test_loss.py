"""YOLOv2 region loss (model/loss.py) against cases computed by hand with the darknet formulas.

Darknet region layer, per face (grid units): responsible cell = floor(centre), anchor = best
shape IoU; xy term weight * ((sigmoid(tx) - frac(cx))^2 + ...), wh term weight * ((tw - log(w /
anchor_w))^2 + ...), weight = 2 - w * h (normalised); obj term obj_scale * (sigmoid(to) - 1)^2;
every other anchor noobj_scale * sigmoid(to)^2 unless its predicted box overlaps a face of its
image by more than ignore_iou. All summed, divided by the batch size.
"""
from __future__ import annotations

import math

import pytest
import torch

from ifq_tinier_yolo.model.loss import LossConfig, box_iou_cxcywh, objectness_loss, region_loss, shape_iou
from ifq_tinier_yolo.netdef import (H_FIELD, OBJECTNESS_FIELD, VALUES_PER_ANCHOR, W_FIELD, X_FIELD, Y_FIELD,
                                    head_channel)

X, Y, W, H, O = X_FIELD, Y_FIELD, W_FIELD, H_FIELD, OBJECTNESS_FIELD


def sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def head(batch: int, anchors: int, rows: int, cols: int) -> torch.Tensor:
    """All-zero raw head output (B, A*5, H, W)."""
    return torch.zeros(batch, anchors * VALUES_PER_ANCHOR, rows, cols)


def put(out: torch.Tensor, b: int, a: int, row: int, col: int, **fields: float) -> None:
    """Set raw head values through the one owner of the channel layout."""
    names = dict(x=X, y=Y, w=W, h=H, o=O)
    for name, value in fields.items():
        out[b, head_channel(a, names[name]), row, col] = value


def noobj_sum(out: torch.Tensor, na: int, skip: set[tuple[int, int, int, int]]) -> float:
    """sum of sigmoid(to)^2 over every (b, a, row, col) not in `skip`, computed element by element."""
    total = 0.0
    bsz, _, rows, cols = out.shape
    for b in range(bsz):
        for a in range(na):
            for r in range(rows):
                for c in range(cols):
                    if (b, a, r, c) not in skip:
                        total += sig(float(out[b, head_channel(a, O), r, c])) ** 2
    return total


def check(out, targets, anchors, expected: dict[str, float], cfg: LossConfig = LossConfig()):
    loss, parts = region_loss(out, torch.tensor(targets, dtype=torch.float32).reshape(-1, 5),
                              torch.tensor(anchors, dtype=torch.float32), cfg)
    for k in ('xy', 'wh', 'obj', 'noobj'):
        assert parts[k] == pytest.approx(expected[k], rel=1e-5, abs=1e-7), k
    assert float(loss.detach()) == pytest.approx(sum(expected.values()), rel=1e-5)
    return loss


# --- one face, one anchor ---------------------------------------------------------------------

AW, AH = 1.2, 0.8   # a non-square anchor, grid cells: w and h must not be mixed up


@pytest.mark.parametrize('rows, cols', [(2, 2), (2, 3)])
@pytest.mark.parametrize('cfg', [LossConfig(), LossConfig(coord_scale=2.0, obj_scale=3.0, noobj_scale=0.5)])
def test_one_face_one_anchor(rows: int, cols: int, cfg: LossConfig):
    cx, cy, w, h = 0.3, 0.7, 0.4, 0.3                     # normalised face
    gx, gy, gw, gh = cx * cols, cy * rows, w * cols, h * rows   # grid units
    col, row = int(gx), int(gy)
    assert (row, col) == (1, 0)
    out = head(1, 1, rows, cols)
    put(out, 0, 0, row, col, x=0.3, y=-0.2, w=0.1, h=-0.4, o=0.7)
    others = [(0, 0, r, c) for r in range(rows) for c in range(cols) if (r, c) != (row, col)]
    for k, (_, _, r, c) in enumerate(others):
        put(out, 0, 0, r, c, o=-1.0 + 0.6 * k)            # anchor boxes at cell centres: IoU < 0.3 with the face
    weight = 2 - w * h
    expected = dict(
        xy=cfg.coord_scale * weight * ((sig(0.3) - (gx - col)) ** 2 + (sig(-0.2) - (gy - row)) ** 2),
        wh=cfg.coord_scale * weight * ((0.1 - math.log(gw / AW)) ** 2 + (-0.4 - math.log(gh / AH)) ** 2),
        obj=cfg.obj_scale * (sig(0.7) - 1) ** 2,
        noobj=cfg.noobj_scale * noobj_sum(out, 1, {(0, 0, row, col)}),
    )
    assert expected['noobj'] > 0.2   # the other cells contribute: the noobj term is not vacuous
    out.requires_grad_(True)
    loss = check(out, [[0, cx, cy, w, h]], [[AW, AH]], expected, cfg)
    loss.backward()
    # d loss / d tw of the responsible anchor, by hand
    g_tw = float(out.grad[0, head_channel(0, W), row, col])
    assert g_tw == pytest.approx(cfg.coord_scale * weight * 2 * (0.1 - math.log(gw / AW)), rel=1e-5)
    g_to = float(out.grad[0, head_channel(0, O), row, col])
    assert g_to == pytest.approx(cfg.obj_scale * 2 * (sig(0.7) - 1) * sig(0.7) * (1 - sig(0.7)), rel=1e-5)
    r, c = others[0][2:]
    s = sig(-1.0)
    assert float(out.grad[0, head_channel(0, O), r, c]) == pytest.approx(cfg.noobj_scale * 2 * s * s * (1 - s), rel=1e-5)


# --- two anchors, two images ------------------------------------------------------------------

def test_two_anchors_best_shape_iou_and_batch_index():
    anchors = [[0.5, 0.5], [2.0, 1.5]]
    out = head(2, 2, 2, 2)
    k = 0
    for b in range(2):
        for a in range(2):
            for r in range(2):
                for c in range(2):
                    put(out, b, a, r, c, o=-3.0 + 0.25 * k)
                    k += 1
    # face in image 1: grid box (1.5, 0.5, 1.8, 1.6) -> cell row 0, col 1; shape IoU 0.087 vs 0.85 -> anchor 1
    face = [1, 0.75, 0.25, 0.9, 0.8]
    assert shape_iou(torch.tensor([[1.8, 1.6]]), torch.tensor(anchors)).argmax(1).item() == 1
    put(out, 1, 1, 0, 1, x=0.4, y=-0.3, w=-0.2, h=0.5)
    o_resp = float(out[1, head_channel(1, O), 0, 1])
    weight = 2 - 0.9 * 0.8
    expected = dict(
        xy=weight * ((sig(0.4) - 0.5) ** 2 + (sig(-0.3) - 0.5) ** 2),
        wh=weight * ((-0.2 - math.log(1.8 / 2.0)) ** 2 + (0.5 - math.log(1.6 / 1.5)) ** 2),
        obj=5.0 * (sig(o_resp) - 1) ** 2,
        noobj=noobj_sum(out, 2, {(1, 1, 0, 1)}),
    )
    expected = {key: v / 2 for key, v in expected.items()}   # / batch
    check(out, [face], anchors, expected)


# --- the ignore mask --------------------------------------------------------------------------

@pytest.mark.parametrize('iou, threshold, ignored', [
    (0.7, 0.6, True), (0.5, 0.6, False), (0.7, 0.75, False), (0.62, 0.6, True), (0.58, 0.6, False)])
def test_ignore_mask(iou: float, threshold: float, ignored: bool):
    anchors = [[1.0, 1.0], [3.0, 3.0]]
    out = head(1, 2, 2, 2)
    # face = grid box (0.5, 0.5, 1, 1): anchor 0 (shape IoU 1) in cell (0, 0) is responsible
    face = [0, 0.25, 0.25, 0.5, 0.5]
    # anchor 1 in the same cell predicts a box (0.5, 0.5, s, s) around the face: IoU = 1 / s^2
    s = math.sqrt(1 / iou)
    put(out, 0, 1, 0, 0, w=math.log(s / 3.0), h=math.log(s / 3.0), o=1.0)
    pred = torch.tensor([[0.5, 0.5, s, s]])
    assert float(box_iou_cxcywh(pred, torch.tensor([[0.5, 0.5, 1.0, 1.0]]))) == pytest.approx(iou, rel=1e-5)
    skip = {(0, 0, 0, 0)} | ({(0, 1, 0, 0)} if ignored else set())
    expected = dict(xy=(2 - 0.25) * 0.0, wh=(2 - 0.25) * 0.0, obj=5.0 * (sig(0) - 1) ** 2,
                    noobj=noobj_sum(out, 2, skip))
    check(out, [face], anchors, expected, LossConfig(ignore_iou=threshold))
    # the candidate alone would cost sigmoid(1)^2 = 0.53: the two cases really differ
    with_it = noobj_sum(out, 2, {(0, 0, 0, 0)})
    assert (with_it - expected['noobj'] > 0.5) == ignored


def test_ignore_mask_only_uses_faces_of_the_same_image():
    anchors = [[1.0, 1.0], [3.0, 3.0]]
    out = head(2, 2, 2, 2)
    s = math.sqrt(1 / 0.8)
    for b in range(2):   # the same overlapping prediction in both images
        put(out, b, 1, 0, 0, w=math.log(s / 3.0), h=math.log(s / 3.0), o=1.0)
    expected = dict(xy=0.0, wh=0.0, obj=5.0 * (sig(0) - 1) ** 2,
                    noobj=noobj_sum(out, 2, {(0, 0, 0, 0), (0, 1, 0, 0)}))   # image 1 has no face
    check(out, [[0, 0.25, 0.25, 0.5, 0.5]], anchors, {k: v / 2 for k, v in expected.items()})


# --- collisions -------------------------------------------------------------------------------

def collision_case():
    out = head(1, 1, 2, 2)
    put(out, 0, 0, 0, 0, x=0.2, y=-0.1, w=0.3, h=0.1, o=0.4)
    f1 = (0.3, 0.4, 0.8, 0.6)   # grid units, both in cell (0, 0), anchor 0
    f2 = (0.7, 0.2, 1.2, 0.9)
    return out, f1, f2


def expected_for(out, face, n_resp_cells=1):
    gx, gy, gw, gh = face
    weight = 2 - (gw / 2) * (gh / 2)
    return dict(xy=weight * ((sig(0.2) - gx) ** 2 + (sig(-0.1) - gy) ** 2),
                wh=weight * ((0.3 - math.log(gw)) ** 2 + (0.1 - math.log(gh)) ** 2),
                obj=5.0 * (sig(0.4) - 1) ** 2 * n_resp_cells,
                noobj=noobj_sum(out, 1, {(0, 0, 0, 0)}))


def norm(face):
    return [0] + [v / 2 for v in face]


def test_two_faces_in_one_cell_and_anchor_last_wins():
    out, f1, f2 = collision_case()
    check(out, [norm(f1), norm(f2)], [[1.0, 1.0]], expected_for(out, f2))
    check(out, [norm(f2), norm(f1)], [[1.0, 1.0]], expected_for(out, f1))
    # the objectness target is counted once, not once per face
    loss_one, _ = region_loss(out, torch.tensor([norm(f2)]), torch.tensor([[1.0, 1.0]]))
    loss_two, _ = region_loss(out, torch.tensor([norm(f1), norm(f2)]), torch.tensor([[1.0, 1.0]]))
    assert float(loss_one) == pytest.approx(float(loss_two), rel=1e-6)


def test_faces_in_different_cells_are_both_counted():
    out, f1, _ = collision_case()
    put(out, 0, 0, 1, 1, x=-0.5, o=-0.3)
    f3 = (1.5, 1.25, 0.8, 0.6)   # cell (1, 1)
    e1 = expected_for(out, f1)
    w3 = 2 - 0.4 * 0.3
    expected = dict(xy=e1['xy'] + w3 * ((sig(-0.5) - 0.5) ** 2 + (sig(0) - 0.25) ** 2),
                    wh=e1['wh'] + w3 * ((0 - math.log(0.8)) ** 2 + (0 - math.log(0.6)) ** 2),
                    obj=e1['obj'] + 5.0 * (sig(-0.3) - 1) ** 2,
                    noobj=noobj_sum(out, 1, {(0, 0, 0, 0), (0, 0, 1, 1)}))
    check(out, [norm(f1), norm(f3)], [[1.0, 1.0]], expected)


# --- no faces, edges, gradients ---------------------------------------------------------------

def test_zero_faces_give_only_the_noobj_term():
    torch.manual_seed(0)
    out = (torch.randn(2, 10, 3, 3) * 2).requires_grad_(True)
    check(out.detach(), [], [[1.0, 1.0], [2.0, 2.0]],
          dict(xy=0.0, wh=0.0, obj=0.0, noobj=noobj_sum(out.detach(), 2, set()) / 2))
    loss, _ = region_loss(out, torch.zeros(0, 5), torch.tensor([[1.0, 1.0], [2.0, 2.0]]))
    loss.backward()
    grad = out.grad.view(2, 2, VALUES_PER_ANCHOR, 3, 3)   # (B, A, 5, H, W)
    assert float(grad[:, :, :O].abs().sum()) == 0.0          # no coordinate gradient without faces
    assert bool((grad[:, :, O] > 0).all())                   # every objectness pushed down


def test_face_on_the_far_edge_is_clamped_into_the_last_cell():
    out = head(1, 1, 2, 2)
    # cx = cy = 1.0 -> grid 2.0: cell 1 (clamped), target sigmoid(tx) = 1
    weight = 2 - 0.25 * 0.25
    expected = dict(xy=weight * 2 * (0.5 - 1.0) ** 2, wh=weight * 2 * math.log(0.5) ** 2,
                    obj=5.0 * 0.25, noobj=noobj_sum(out, 1, {(0, 0, 1, 1)}))
    check(out, [[0, 1.0, 1.0, 0.25, 0.25]], [[1.0, 1.0]], expected)


def test_gradients_finite_for_extreme_heads_and_tiny_faces():
    torch.manual_seed(1)
    out = torch.randn(3, 10, 4, 4) * 10
    out[0, :, 0, 0] = 60.0
    out[1, :, 1, 1] = -60.0
    out.requires_grad_(True)
    targets = torch.tensor([[0, 0.1, 0.1, 1e-4, 2e-4], [0, 0.99, 0.5, 0.9, 0.95], [1, 0.0, 1.0, 0.01, 0.01],
                            [1, 0.4, 0.4, 0.3, 0.3], [2, 0.5, 0.5, 1.0, 1.0]])
    loss, parts = region_loss(out, targets, torch.tensor([[0.5, 0.6], [3.0, 4.0]]))
    assert math.isfinite(loss.item()) and all(math.isfinite(v) for v in parts.values())
    loss.backward()
    assert torch.isfinite(out.grad).all() and float(out.grad.abs().sum()) > 0


def test_box_and_shape_iou():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 1.0, 1.0]])
    b = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 2.0, 2.0], [10.0, 10.0, 1.0, 1.0]])
    torch.testing.assert_close(box_iou_cxcywh(a, b), torch.tensor([[1.0, 1 / 3, 0.0], [0.0, 0.0, 0.0]]))
    torch.testing.assert_close(shape_iou(torch.tensor([[1.0, 1.0], [2.0, 1.0]]), torch.tensor([[2.0, 2.0], [1.0, 1.0]])),
                               torch.tensor([[0.25, 1.0], [0.5, 0.5]]))


def test_giou_of_paired_boxes():
    from ifq_tinier_yolo.model.loss import giou_cxcywh
    a = torch.tensor([[1.0, 1.0, 2.0, 2.0], [1.0, 1.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[1.0, 1.0, 2.0, 2.0], [2.0, 1.0, 2.0, 2.0], [3.0, 0.0, 1.0, 1.0]])
    iou, giou = giou_cxcywh(a, b)
    assert iou.tolist() == pytest.approx([1.0, 1 / 3, 0.0])
    assert giou.tolist() == pytest.approx([1.0, 1 / 3, 0.0 - (4 - 2) / 4])   # apart: GIoU < 0 measures the gap


@pytest.mark.parametrize('box_loss', ['mse', 'giou'])
def test_box_losses_pull_the_box_onto_the_face(box_loss):
    """One responsible anchor: a step of gradient descent on either box loss raises the IoU,
    and rescore trains objectness toward that IoU (so its gradient changes sign below it)."""
    targets = torch.tensor([[0, 0.55, 0.45, 0.3, 0.4]])
    anchors = torch.tensor([[1.0, 1.0]])
    out = torch.zeros(1, 5, 4, 4, requires_grad=True)
    cfg = LossConfig(box_loss=box_loss)
    _, before = region_loss(out, targets, anchors, cfg)
    loss, _ = region_loss(out, targets, anchors, cfg)
    loss.backward()
    with torch.no_grad():
        stepped = out - 0.5 * out.grad
    _, after = region_loss(stepped, targets, anchors, cfg)
    assert after['iou_sum'] > before['iou_sum'] and before['faces'] == 1
    obj = torch.full((1, 5, 4, 4), 0.0)
    obj[0, 4, 1, 2] = 3.0                                   # sigmoid 0.95, above the box's IoU
    obj.requires_grad_(True)
    region_loss(obj, targets, anchors, LossConfig(box_loss=box_loss, rescore=True))[0].backward()
    assert float(obj.grad[0, 4, 1, 2]) > 0                  # pushed down toward the IoU


def test_focal_objectness_pulls_hardest_on_confident_false_positives():
    """On a cell with no face, the squared error of a sigmoid fades as the score nears 1 (its
    gradient 2 p^2 (1 - p)); the quality focal loss keeps growing there, and its minimum on a
    responsible anchor sits at the rescore target. 'mse' is darknet's term, element by element."""
    logits = torch.tensor([-4.0, 0.0, 2.0, 4.0], requires_grad=True)
    zeros = torch.zeros(4)
    grads = {}
    for kind in ('mse', 'qfocal'):
        logits.grad = None
        objectness_loss(logits, zeros, kind).sum().backward()
        grads[kind] = logits.grad.clone()
    p = torch.sigmoid(logits.detach())
    assert torch.allclose(grads['mse'], 2 * p * p * (1 - p))
    assert grads['mse'][3] < grads['mse'][2]                 # mse: a score of 0.98 pulled less than 0.88
    assert bool((grads['qfocal'].diff() > 0).all())          # focal: the more confident, the harder
    assert grads['qfocal'][3] > 10 * grads['mse'][3]
    assert grads['qfocal'][0] < grads['mse'][0]              # and the easy negatives fade
    # a responsible anchor with rescore target 0.7: the loss is least at sigmoid = 0.7
    grid = torch.linspace(-3, 3, 601)
    best = grid[objectness_loss(grid, torch.full_like(grid, 0.7), 'qfocal').argmin()]
    assert float(torch.sigmoid(best)) == pytest.approx(0.7, abs=0.01)
    with pytest.raises(ValueError, match='unknown objectness loss'):
        objectness_loss(logits, zeros, 'hinge')


def test_region_loss_with_focal_objectness_sums_the_focal_terms():
    """obj_loss='qfocal' replaces both objectness terms of the region loss and nothing else."""
    out = head(1, 1, 3, 3)
    put(out, 0, 0, 1, 1, o=1.5)
    put(out, 0, 0, 0, 2, o=2.0)                              # a confident false positive
    targets = torch.tensor([[0, 0.5, 0.5, 0.3, 0.3]])
    anchors = torch.tensor([[1.0, 1.0]])
    mse = region_loss(out, targets, anchors, LossConfig())[1]
    focal = region_loss(out, targets, anchors, LossConfig(obj_loss='qfocal'))[1]
    assert focal['xy'] == pytest.approx(mse['xy']) and focal['wh'] == pytest.approx(mse['wh'])
    logit = out[0, O].flatten()
    neg = torch.ones(9, dtype=torch.bool)
    neg[4] = False
    want = objectness_loss(logit[neg], torch.zeros(8), 'qfocal').sum()
    assert focal['noobj'] == pytest.approx(float(want))
    assert focal['obj'] == pytest.approx(5 * float(objectness_loss(logit[4:5], torch.ones(1), 'qfocal')))


def test_tiny_faces_are_dont_care_on_every_head():
    """cfg.tiny: a face under that fraction of the input side trains no anchor, and its cell has no
    objectness loss on any anchor of any head; larger faces train as before."""
    from ifq_tinier_yolo.model.loss import detection_loss
    anchors = [torch.tensor([[1.0, 1.2], [2.0, 2.5]]), torch.tensor([[1.0, 1.2]])]   # 8x8 and 16x16 grids
    big = torch.tensor([[0, 0.5, 0.5, 0.25, 0.3]])
    tiny = torch.tensor([[0, 0.2, 0.8, 0.03, 0.04]])                  # longer side 0.04 of the input
    outs = [torch.zeros(1, 10, 8, 8, requires_grad=True), torch.zeros(1, 5, 16, 16, requires_grad=True)]
    cfg = LossConfig(tiny=0.05)
    loss, parts = detection_loss(outs, torch.cat([big, tiny]), anchors, cfg)
    loss.backward()
    assert parts['faces'] == 1                                        # only the big face trains an anchor
    for out, g in zip(outs, (8, 16)):
        obj = out.grad.view(out.shape[0], -1, VALUES_PER_ANCHOR, g, g)[0, :, OBJECTNESS_FIELD]
        cj, ci = int(0.8 * g), int(0.2 * g)
        assert (obj[:, cj, ci] == 0).all()                            # the tiny face's cell: don't care
        assert (obj[:, 0, 0] != 0).all()                              # background elsewhere still trains
    # without the tiny face its cell would train as background; with tiny=0 it trains an anchor
    plain, p0 = detection_loss([o.detach() for o in outs], torch.cat([big, tiny]), anchors, LossConfig())
    assert p0['faces'] == 2
    alone, _ = detection_loss([o.detach() for o in outs], big, anchors, cfg)
    assert loss.item() < alone.item()                                 # the don't-care cell's noobj terms are gone
