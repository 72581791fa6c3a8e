"""Layer tables as graphs: the two-head v2 network through every stage (model, loss, conversion,
model file, engine), each checked against the stage before it."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from ifq_tinier_yolo import netdef
from ifq_tinier_yolo.engine import modelfile as fmt
from ifq_tinier_yolo.engine import runtime
from ifq_tinier_yolo.engine.decode import requantize
from ifq_tinier_yolo.integrate.convert import convert_model
from ifq_tinier_yolo.model.loss import LossConfig, assign_heads, detection_loss, region_loss, shape_iou
from ifq_tinier_yolo.model.predict import to_input
from ifq_tinier_yolo.model.tinier_yolo import TinierYolo
from ifq_tinier_yolo.netdef import LayerSpec, head_layer

from quant_nets import random_quant_network

CHAIN = Path(__file__).resolve().parents[1] / 'weights' / 'v1.ifq'   # a one-head model

pytestmark = pytest.mark.usefixtures('torch_one_thread')

V2 = netdef.LAYERS_V2
# a small graph of every kind: a chain, a lateral 1x1, an upsample, a concatenation, an int8 layer
# on codes, two heads, one of them on a concatenation
SMALL = (LayerSpec('c1', 'first', 4, 3, 2), LayerSpec('c2', 'hidden', 6, 3, 1, pool=2),
         LayerSpec('c3', 'hidden', 8, 3, 1, pool=2), head_layer(((1.0, 1.5), (2.0, 2.5)), 'h8'),
         LayerSpec('lat', 'hidden', 4, 1, 1, inputs=('c3',)), LayerSpec('up', 'upsample', 4),
         LayerSpec('c4', 'hidden', 5, 3, 1, inputs=('up', 'c2')), LayerSpec('c5', 'fixed', 5, 3, 1),
         head_layer(((0.5, 0.75),), 'h4', inputs=('c5', 'c4')))


def test_v2_table_shapes():
    assert netdef.head_strides(V2) == [16, 8] and netdef.total_stride(V2) == 16
    assert netdef.in_channels(V2)[[l.name for l in V2].index('conv7')] == 64 + 64
    assert netdef.receptive_field(V2) == netdef.receptive_field(netdef.LAYERS) == 103
    assert netdef.layers_from_list(netdef.layers_to_list(V2)) == V2


@pytest.mark.parametrize('change, message', [
    (lambda t: (*t[:4], dataclasses.replace(t[4], inputs=('c4',)), *t[5:]), "input 'c4' is not an earlier layer"),
    (lambda t: (*t[:6], dataclasses.replace(t[6], inputs=('up', 'c3')), *t[7:]), 'different strides'),
    (lambda t: (*t[:5], dataclasses.replace(t[5], out_ch=3), *t[6:]), 'keeps its 4 channels'),
    (lambda t: (*t[:3], dataclasses.replace(t[3], anchors=()), *t[4:]), 'a head needs anchors'),
    (lambda t: (*t[:4], dataclasses.replace(t[4], inputs=('h8',)), *t[5:]), 'a head cannot feed'),
    (lambda t: (*t[:2], dataclasses.replace(t[2], anchors=((1.0, 1.0),)), *t[3:]), 'only heads have anchors'),
    (lambda t: (*t[:3], LayerSpec('x', 'hidden', 3, 1, 1, inputs=('c2',)), dataclasses.replace(t[3], inputs=('c3',)),
                *t[4:]), 'layer x: its output is not used'),
    (lambda t: t[:7], 'must end with a head'),
])
def test_bad_graphs_name_the_layer(change, message):
    netdef.check_layers(SMALL)
    with pytest.raises(ValueError, match=message):
        netdef.check_layers(change(SMALL))


@pytest.mark.parametrize('quant', ['float', 'hwgq'])
def test_v2_model_gives_one_output_per_head(quant):
    model = TinierYolo(V2, quant=quant).eval()
    with torch.no_grad():
        outs = model(torch.rand(2, 3, 64, 64) * 255)
    assert [tuple(o.shape) for o in outs] == [(2, 15, 4, 4), (2, 10, 8, 8)]
    assert model.head_anchors == [netdef.ANCHORS_S16, netdef.ANCHORS_S8]
    with pytest.raises(ValueError, match='2 heads'):
        model.head   # noqa: B018


def test_faces_go_to_the_best_anchor_across_heads():
    anchors = [torch.tensor(netdef.ANCHORS_S16), torch.tensor(netdef.ANCHORS_S8)]
    grids = [20, 40]                                   # a 320 px input
    # a 6 px face fits the stride-8 head's smallest anchor; an 80 px face the stride-16 head's largest
    targets = torch.tensor([[0, 0.5, 0.5, 6 / 320, 7.5 / 320], [0, 0.3, 0.3, 70 / 320, 90 / 320]])
    rows, (a16, a8) = assign_heads(targets, anchors, grids)
    assert torch.equal(rows, targets) and a8.tolist() == [0, -1] and a16.tolist() == [-1, 2]
    out = [torch.zeros(1, 15, 20, 20, requires_grad=True), torch.zeros(1, 10, 40, 40, requires_grad=True)]
    loss, parts = detection_loss(out, targets, anchors)
    loss.backward()
    cell8, cell16 = out[1].grad.view(2, 5, 40, 40)[0, :4, 20, 20], out[0].grad.view(3, 5, 20, 20)[2, :4, 6, 6]
    assert cell8.abs().sum() > 0 and cell16.abs().sum() > 0   # each face trains its own head's box
    assert out[1].grad.view(2, 5, 40, 40)[1, :4].abs().sum() == 0
    one, _ = detection_loss(out[:1], targets, anchors[:1], LossConfig())
    assert torch.equal(one, region_loss(out[0], targets, anchors[0])[0])   # one head: the plain region loss


def test_anchor_iou_adds_the_anchors_of_close_shape_across_heads():
    anchors = [torch.tensor(netdef.ANCHORS_S16), torch.tensor(netdef.ANCHORS_S8)]
    grids = [20, 40]
    # 12 x 15 px lies between the stride-16 head's smallest anchor (14 x 17 px at 320, best) and
    # the stride-8 head's larger one (9 x 12 px); 70 x 90 px is close to one anchor only
    targets = torch.tensor([[0, 0.5, 0.5, 12 / 320, 15 / 320], [0, 0.3, 0.3, 70 / 320, 90 / 320]])
    best_iou = [shape_iou(targets[:1, 3:5], a / g)[0] for a, g in zip(anchors, grids)]
    assert best_iou[0][0] > best_iou[1][1] > 0.5 > max(best_iou[0][1], best_iou[1][0])
    rows, (a16, a8) = assign_heads(targets, anchors, grids, anchor_iou=0.5)
    assert torch.equal(rows, targets[[0, 0, 1]])                 # the small face twice, the large once
    assert a16.tolist() == [0, -1, 2] and a8.tolist() == [-1, 1, -1]
    out = [torch.zeros(1, 15, 20, 20, requires_grad=True), torch.zeros(1, 10, 40, 40, requires_grad=True)]
    detection_loss(out, targets, anchors, LossConfig(anchor_iou=0.5))[0].backward()
    assert out[0].grad.view(3, 5, 20, 20)[0, :4, 10, 10].abs().sum() > 0   # both anchors train its box
    assert out[1].grad.view(2, 5, 40, 40)[1, :4, 20, 20].abs().sum() > 0
    # anchor_iou 1 is the plain assignment, on one head as well
    assert torch.equal(assign_heads(targets, anchors, grids, 1.0)[0], targets)
    # on head16 alone neither face has a second anchor above 0.5: the plain region loss again
    one, _ = detection_loss(out[:1], targets, anchors[:1], LossConfig(anchor_iou=0.5))
    assert torch.equal(one, region_loss(out[0], targets, anchors[0])[0])
    assert detection_loss(out[:1], targets, anchors[:1], LossConfig(anchor_iou=0.25))[0] > one


@pytest.fixture(scope='module')
def small_pair():
    net = random_quant_network(SMALL, seed=2, calib_size=32)
    return net, convert_model(net, 32)


def test_converted_graph_is_bit_exact_on_every_head(small_pair):
    net, model = small_pair
    assert [h.spec.name for h in model.heads] == ['h8', 'h4'] and model.head_strides == [8, 4]
    rng = np.random.default_rng(0)
    for size in (32, 48):
        canvas = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        want = [h[0].numpy() for h in net.head_integers(to_input([canvas]))]
        got = runtime.run_heads(model, canvas)
        assert [g.shape for g in got] == [w.shape for w in want]
        assert all(np.array_equal(g, w) for g, w in zip(got, want))
        assert all(np.array_equal(g, p) for g, p in zip(got, runtime.run_heads(model, canvas, packed=True)))
    with pytest.raises(ValueError, match='2 heads'):
        runtime.run(model, canvas)


def test_graph_model_file_round_trip(small_pair):
    _, model = small_pair
    again = fmt.from_bytes(fmt.to_bytes(model))
    assert again.specs == model.specs
    for a, b in zip(model.heads, again.heads):
        assert np.array_equal(a.anchors_q16, b.anchors_q16)
        assert (a.out_multiplier, a.out_shift) == (b.out_multiplier, b.out_shift)
    canvas = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert all(np.array_equal(x, y) for x, y in zip(runtime.run_heads(model, canvas), runtime.run_heads(again, canvas)))


def test_detect_merges_both_heads_in_one_nms(small_pair):
    _, model = small_pair
    heads = runtime.run_heads(model, np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    boxes, scores = runtime.decode_heads(model.decoders, heads, 0.0, 1.0)   # nothing suppressed: every candidate
    assert len(boxes) == 2 * 4 * 4 + 1 * 8 * 8
    assert (np.diff(scores) <= 1 / 65536).all()                    # best first across heads (score units)


def test_rank_key_orders_a_single_head_by_its_integers():
    obj = np.array([5, -3, 5, 100000, -100000, 7, 6], dtype=np.int64)
    key = runtime.rank_key(requantize(obj, 1 << 30, 40), obj)
    assert np.array_equal(np.argsort(-key, kind='stable'), np.argsort(-obj, kind='stable'))


def test_v1_checkpoint_grows_into_v2():
    """--init of a v1 model into v2: the trunk is copied, and head16 takes the v1 head's channels
    of the three anchors it keeps (the two smallest moved to the new stride-8 head)."""
    from ifq_tinier_yolo.train import transplant
    torch.manual_seed(0)
    v1 = TinierYolo(quant='float').eval()
    v2 = transplant(v1, TinierYolo(V2, quant='float'), lambda msg: None)
    old, new = v1.state_dict(), v2.state_dict()
    shared = [k for k in old if k.startswith('blocks.')]
    assert len(shared) == 6 * 6 and all(torch.equal(old[k], new[k]) for k in shared)
    assert torch.equal(new['heads.0.conv.weight'], old['heads.0.conv.weight'][10:])
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        assert torch.allclose(v1(x)[0][:, 10:], v2(x)[0], atol=1e-5)   # head16 = the v1 head's big anchors


def test_v2_grows_into_v3_keeping_what_it_computes():
    """--init of a v2 model into v3: conv6 keeps the channels of largest |BN scale| (lat6 and
    head16 drop the inputs it lost) and the new conv8 starts as the identity. With the dropped
    channels dead (BN scale 0, negative shift: ReLU gives 0) both heads compute what v2's did."""
    from ifq_tinier_yolo.train import transplant
    torch.manual_seed(0)
    v2 = TinierYolo(V2, quant='float')
    state = v2.state_dict()
    for k in [k for k in state if k.endswith(('running_mean', 'running_var', 'bn.weight', 'bn.bias'))]:
        state[k] = torch.rand_like(state[k]) + 0.5                 # statistics other than BN's defaults
    dead = torch.randperm(256)[:64]
    state['blocks.5.bn.weight'][dead], state['blocks.5.bn.bias'][dead] = 0.0, -1.0
    v2.load_state_dict(state)
    logged = []
    v3 = transplant(v2.eval(), TinierYolo(netdef.LAYERS_V3, quant='float'), logged.append)
    assert 'narrowed: conv6; identity: conv8' in logged[0]
    alive = torch.tensor(sorted(set(range(256)) - set(dead.tolist())))
    assert torch.equal(v3.state_dict()['blocks.5.bn.weight'], state['blocks.5.bn.weight'][alive])
    assert torch.equal(v3.state_dict()['blocks.6.conv.weight'], state['blocks.6.conv.weight'][:, alive])
    x = torch.rand(2, 3, 64, 96) * 255
    with torch.no_grad():
        for old, new in zip(v2(x), v3(x)):
            assert torch.allclose(old, new, rtol=1e-4, atol=1e-4)


def test_transplant_keeps_a_layer_that_only_changes_weight_precision():
    """v3 -> v4 (conv8 binary -> int8) and v2 -> v5 (conv2, conv3): every tensor is copied, the
    latent float weights of a binary layer becoming those of the int8 one, and back."""
    from ifq_tinier_yolo.train import transplant
    torch.manual_seed(0)
    for old, new in ((netdef.LAYERS_V3, netdef.LAYERS_V4), (netdef.LAYERS_V2, netdef.LAYERS_V5),
                     (netdef.LAYERS_V5, netdef.LAYERS_V2)):
        src, logged = TinierYolo(old, quant='hwgq').eval(), []
        dst = transplant(src, TinierYolo(new, quant='hwgq'), logged.append)
        n = len(src.state_dict())
        assert logged[0].startswith(f'--init into another table: {n} of {n} tensors copied')
        assert all(torch.equal(v, dst.state_dict()[k]) for k, v in src.state_dict().items())
    assert [b.spec.kind for b in dst.blocks if b.spec.name in ('conv2', 'conv3')] == ['hidden', 'hidden']


def test_v2_grows_into_v6_computing_the_same_heads():
    """--init of a binary v2 into v6 (each head also reads an earlier layer): every tensor is copied,
    the heads' new input channels start at zero weight, so the head integers stay v2's; the new
    weights then train."""
    from ifq_tinier_yolo.train import transplant
    v2 = random_quant_network(V2, seed=4, calib_size=32)
    logged = []
    v6 = transplant(v2, TinierYolo(netdef.LAYERS_V6, quant='hwgq'), logged.append)
    assert logged[0].startswith('--init into another table: 52 of 52 tensors copied')
    assert 'more inputs: head16, head8' in logged[0]
    w = v6.state_dict()['heads.1.conv.weight']                 # head8: conv7's 64 codes, then conv3's 64
    assert w.shape[1] == 128 and torch.equal(w[:, :64], v2.state_dict()['heads.1.conv.weight'])
    assert not w[:, 64:].any()
    x = to_input([np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)])
    assert all(torch.equal(a, b) for a, b in zip(v2.head_integers(x), v6.head_integers(x)))


def test_v2_grows_into_the_wider_v7():
    """--init of v2 into v7 (32 first-layer channels instead of 16): conv1 keeps its 16 channels
    first, conv2 its weights on them. In float the new inputs start at zero weight, so the network
    computes what v2 did; in hwgq they keep fresh binary weights (a binary weight has no zero)."""
    from ifq_tinier_yolo.train import transplant
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 96) * 255
    for quant in ('float', 'hwgq'):
        v2 = TinierYolo(V2, quant=quant).eval()
        logged = []
        v7 = transplant(v2, TinierYolo(netdef.LAYERS_V7, quant=quant), logged.append)
        assert 'wider: conv1' in logged[0] and 'new: ' in logged[0]
        old, new = v2.state_dict(), v7.state_dict()
        assert torch.equal(new['blocks.0.conv.weight'][:16], old['blocks.0.conv.weight'])
        assert torch.equal(new['blocks.0.bn.running_var'][:16], old['blocks.0.bn.running_var'])
        assert torch.equal(new['blocks.1.conv.weight'][:, :16], old['blocks.1.conv.weight'])
        assert (new['blocks.1.conv.weight'][:, 16:] == 0).all() == (quant == 'float')
        assert all(torch.equal(new[k], v) for k, v in old.items() if not k.startswith(('blocks.0.', 'blocks.1.conv')))
    v2 = TinierYolo(V2, quant='float').eval()
    v7 = transplant(v2, TinierYolo(netdef.LAYERS_V7, quant='float'), lambda m: None)
    with torch.no_grad():
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(v2(x), v7(x)))


def test_pyramid_levels_after_the_first_run_the_coarsest_head(small_pair, tmp_path):
    """Detector: the first level asks for the boxes of every head, the smaller levels for those
    of the coarsest head only (netdef.coarsest_heads); the merge sees exactly those runs."""
    from ifq_tinier_yolo.apps.detector import LEVEL_NMS, Detector, discount_small, merge_levels
    _, model = small_pair
    path = tmp_path / 'small.ifq'
    path.write_bytes(fmt.to_bytes(model))
    det = Detector.load(path, backend='int', conf=0.0, img_size=32, levels=3)
    assert det.sizes == [32, 16, 8] and det.coarse_heads == (0,)
    asked, run = [], det._run

    def recorded(image, conf, nms, size, heads=None):
        asked.append((size, heads))
        return run(image, conf, nms, size, heads)
    det._run = recorded
    image = np.random.default_rng(8).integers(0, 256, (40, 64, 3), dtype=np.uint8)
    got = det.detect_array(image)
    assert asked == [(32, None), (16, (0,)), (8, (0,))]
    levels = [runtime.detect(model, image, 0.0, LEVEL_NMS, size, heads) for size, heads in asked]
    assert len(levels[1]) < len(runtime.detect(model, image, 0.0, LEVEL_NMS, 16))   # head h4's boxes left out
    want = discount_small(merge_levels(levels, det.sizes, 64, 8, det.nms), det.sizes[0], 64, 8)
    np.testing.assert_array_equal(got, want)
    # a one-head model runs that head at every level: no subset, so one runner per shape
    assert Detector.load(CHAIN, backend='int').coarse_heads is None
