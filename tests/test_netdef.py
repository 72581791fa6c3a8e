"""The layer table: derived numbers, checks that name the layer, round trip as plain data."""
from __future__ import annotations

import dataclasses

import pytest

from ifq_tinier_yolo import netdef
from ifq_tinier_yolo.netdef import LayerSpec


def test_default_table_geometry():
    assert netdef.total_stride() == 16
    assert netdef.grid_size(416) == 26 and netdef.grid_size(320) == 20
    assert netdef.in_channels()[0] == 3
    assert netdef.in_channels()[1:] == [layer.out_ch for layer in netdef.LAYERS[:-1]]
    assert netdef.LAYERS[-1].out_ch == len(netdef.ANCHORS) * netdef.VALUES_PER_ANCHOR


def test_head_channel_layout_is_anchor_major():
    seen = {netdef.head_channel(a, f) for a in range(len(netdef.ANCHORS))
            for f in range(netdef.VALUES_PER_ANCHOR)}
    assert seen == set(range(netdef.LAYERS[-1].out_ch))
    assert netdef.head_channel(1, netdef.OBJECTNESS_FIELD) == netdef.VALUES_PER_ANCHOR + 4


def test_binary_weight_budget():
    chans = netdef.in_channels()
    bits = sum(l.out_ch * c * l.kernel ** 2 for l, c in zip(netdef.LAYERS, chans) if l.kind == 'hidden')
    assert bits / 8 < 246_000   # the packed hidden weights alone fit the paper's model size


@pytest.mark.parametrize('change, message', [
    (lambda t: (dataclasses.replace(t[0], kernel=2),) + t[1:], 'layer conv1: kernel 2'),
    (lambda t: t[:2] + (dataclasses.replace(t[2], pool=3),) + t[3:], 'layer conv3: pool'),
    (lambda t: t[:-1] + (dataclasses.replace(t[-1], out_ch=24),), 'layer head: 24 channels'),
    (lambda t: t[:-1] + (dataclasses.replace(t[-1], kernel=3),), 'layer head: the head must be a 1x1'),
    (lambda t: t[:1] + (dataclasses.replace(t[1], kind='first'),) + t[2:], 'layer conv2: only the first layer'),
    (lambda t: t[1:], 'must start with a first layer'),
    (lambda t: t[:1] + (dataclasses.replace(t[1], kind='dense'),) + t[2:], "layer conv2: unknown kind 'dense'"),
    (lambda t: (dataclasses.replace(t[0], kind='dense'),) + t[1:], "layer conv1: unknown kind 'dense'"),
])
def test_bad_tables_name_the_layer(change, message):
    with pytest.raises(ValueError, match=message):
        netdef.check_layers(change(netdef.LAYERS))


def test_input_size_must_be_a_multiple_of_the_stride():
    netdef.check_input_size(416)
    for bad in (0, 100, -16):
        with pytest.raises(ValueError, match='multiple of 16'):
            netdef.check_input_size(bad)


def test_table_round_trips_as_plain_data():
    assert netdef.layers_from_list(netdef.layers_to_list()) == netdef.LAYERS
    with pytest.raises(ValueError, match='malformed layer table'):
        netdef.layers_from_list([{'name': 'x'}])
    assert LayerSpec('a', 'hidden', 8, 3, 1).weight_bits == 1
    assert LayerSpec('a', 'head', 8, 1, 1).weight_bits == 8


def test_receptive_field_of_the_table():
    # conv1 3/2: 3 px; conv2 3/2: +2*2; conv3 3/2: +2*4; conv4 3: +2*8; pool 2/2: +1*8;
    # conv5 3: +2*16; conv6 3: +2*16; head 1x1: +0
    assert netdef.receptive_field() == 3 + 4 + 8 + 16 + 8 + 32 + 32 == 103
    plain = (LayerSpec('a', 'first', 4, 3, 1), LayerSpec('b', 'hidden', 4, 5, 1),
             LayerSpec('h', 'head', 25, 1, 1))
    assert netdef.receptive_field(plain) == 7


@pytest.mark.parametrize('size, levels, want', [(512, 2, [512, 256]), (576, 3, [576, 288, 144]),
                                                (416, 2, [416, 208]), (400, 2, [400, 192]),
                                                (32, 3, [32, 16, 16]), (512, 1, [512])])
def test_pyramid_sizes_halve_on_the_stride(size: int, levels: int, want: list[int]):
    sizes = netdef.pyramid_sizes(size, levels)
    assert sizes == want
    assert all(s % netdef.total_stride() == 0 for s in sizes)


@pytest.mark.parametrize('size, want', [(576, 768), (416, 560), (512, 688), (16, 16)])
def test_upscale_size_is_four_thirds_on_the_stride(size: int, want: int):
    assert netdef.upscale_size(size) == want


def test_layers_for_heads_and_coarsest_heads():
    """A run for head16 alone computes the trunk only; head8 alone skips head16; the pyramid's
    smaller levels run the heads at the coarsest stride."""
    names = [l.name for l in netdef.LAYERS_V2]
    def layers(heads):
        return sorted(names[i] for i in netdef.layers_for_heads(netdef.LAYERS_V2, heads))
    assert layers((0,)) == sorted(['conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'conv6', 'head16'])
    assert layers((1,)) == sorted(set(names) - {'head16'})
    assert layers(None) == layers((0, 1)) == sorted(names)
    assert netdef.coarsest_heads(netdef.LAYERS_V2) == (0,) and netdef.coarsest_heads(netdef.LAYERS) == (0,)
    assert netdef.coarsest_heads(netdef.LAYERS_V3) == (0,)
