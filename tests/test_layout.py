"""impasto.layout: the feature maps' memory layout, kept through crops."""
import torch

from impasto.layout import channels_innermost, zeros_as


def test_a_crop_of_a_channels_last_map_keeps_its_channels_innermost():
    """A tile's interior is a crop of a channels_last map: it is no longer contiguous in
    either format, but its channels stay innermost, and the whole map assembled from such
    crops must be channels_last too (the old test, is_contiguous(channels_last), said no and
    assembled the maps between stages in the other layout: transposing copies)."""
    f = torch.zeros(1, 64, 40, 40).contiguous(memory_format=torch.channels_last)
    crop = f[..., 8:32, 8:30]
    assert not crop.is_contiguous(memory_format=torch.channels_last)
    assert channels_innermost(f) and channels_innermost(crop)
    whole = zeros_as(crop, (1, 64, 100, 90))
    assert whole.is_contiguous(memory_format=torch.channels_last) and not whole.is_contiguous()
    assert whole.dtype == crop.dtype and not whole.any()
    assert zeros_as(crop, (1, 64, 4, 4), torch.bfloat16).dtype == torch.bfloat16


def test_contiguous_maps_and_single_channels_stay_contiguous():
    f = torch.zeros(1, 8, 10, 12)
    assert not channels_innermost(f) and not channels_innermost(f[..., 2:8, 1:9])
    assert zeros_as(f[..., 2:8, 1:9], (1, 8, 20, 20)).is_contiguous()
    one = torch.zeros(1, 1, 10, 12).contiguous(memory_format=torch.channels_last)
    assert not channels_innermost(one)       # one channel: both layouts are the same
    assert not channels_innermost(torch.zeros(3, 4))
