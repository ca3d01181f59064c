"""The torchvision backbones (resnet50, inception_v3, mobilenet_v2), built with random weights:
named layers against torchvision's own forward pass, truncation, weights from a file and from
the torch.hub cache, and the real CLI end to end.

These tests need torchvision; without it they skip, unless IMPASTO_REQUIRE_TORCHVISION=1 (as
`make test` sets in .venv-models), which makes a missing torchvision a failure. The tests that
need no torchvision (names, defaults, min sides, the missing-torchvision error) are in
test_backbones.py.
"""
from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch

try:
    import torchvision
except Exception as e:  # noqa: BLE001 - a torchvision built for another torch fails oddly
    if os.environ.get("IMPASTO_REQUIRE_TORCHVISION") == "1":
        raise RuntimeError(f"IMPASTO_REQUIRE_TORCHVISION=1, but torchvision does not import: "
                           f"{e}") from e
    pytest.skip(f"torchvision is not installed ({e})", allow_module_level=True)

import impasto
from impasto import backbones, estimate
from impasto.backbones import torchvision_models as tvm, weights
from impasto.errors import UserError

MODELS = ["resnet50", "inception_v3", "mobilenet_v2"]
SIDE = {"resnet50": 64, "inception_v3": 80, "mobilenet_v2": 64}   # inception needs >= 75

# Every layer and the torchvision module whose output it is, written out here independently
# of impasto's own table.
EXPECTED = {
    "resnet50": [("conv1", "bn1"), ("relu1", "relu"), ("pool1", "maxpool")]
    + [(f"res{s}{c}", f"layer{s - 1}.{i}") for s, n in ((2, 3), (3, 4), (4, 6), (5, 3))
       for i, c in enumerate("abcdef"[:n])],
    "inception_v3": [("conv1a", "Conv2d_1a_3x3"), ("conv2a", "Conv2d_2a_3x3"),
                     ("conv2b", "Conv2d_2b_3x3"), ("pool1", "maxpool1"),
                     ("conv3b", "Conv2d_3b_1x1"), ("conv4a", "Conv2d_4a_3x3"),
                     ("pool2", "maxpool2")]
    + [(f"mixed{b}", f"Mixed_{b}") for b in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e",
                                             "7a", "7b", "7c")],
    "mobilenet_v2": [("conv1", "features.0")] + [(f"block{i}", f"features.{i}")
                                                 for i in range(1, 18)]
    + [("conv2", "features.18")],
}
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def reference(model: str, seed: int = 0):
    """torchvision's own model, randomly initialised, with random batch-norm statistics (so
    that loading them is tested too), in eval mode, as the published weights are used."""
    torch.manual_seed(seed)
    if model == "resnet50":
        net = torchvision.models.resnet50(weights=None)
    elif model == "inception_v3":
        # as torchvision builds it for its ImageNet weights: aux classifier (its keys are in the
        # published file) and transform_input=True (inputs ImageNet-normalised)
        net = torchvision.models.inception_v3(weights=None, aux_logits=True, transform_input=True,
                                              init_weights=False)
    else:
        net = torchvision.models.mobilenet_v2(weights=None)
    gen = torch.Generator().manual_seed(seed + 1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)
    return net.eval()


def module_at(net, path):
    for part in path.split("."):
        net = net[int(part)] if part.isdigit() else getattr(net, part)
    return net


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """model -> (torchvision reference model, path of its saved state dict)."""
    folder = tmp_path_factory.mktemp("tv-weights")
    out = {}
    for model in MODELS:
        ref = reference(model)
        path = folder / f"{model}-random.pth"
        torch.save(ref.state_dict(), path)
        out[model] = (ref, path)
    return out


def close(a, b, rel=1e-4):
    return (a - b).abs().max().item() <= rel * b.abs().max().item() + 1e-6


# ============================================================================= layers
@pytest.mark.parametrize("model", MODELS)
def test_every_named_layer_matches_torchvisions_own_forward(model, saved):
    ref, path = saved[model]
    names = backbones.layers(model)
    assert names == [n for n, _ in EXPECTED[model]]
    net, weights_id = backbones.build(model, [names[-1]], weights_path=str(path))
    assert weights_id.startswith(path.name)
    assert not net.training and not any(p.requires_grad for p in net.parameters())

    # torchvision's forward pass on the input its weights expect, every named module hooked
    x = torch.rand(1, 3, SIDE[model], SIDE[model] + 8, generator=torch.Generator().manual_seed(3))
    seen = {}

    def hook(name):
        def record(module, inputs, output):
            seen.setdefault(name, output.detach().clone())   # relu1: its first call
        return record
    handles = [module_at(ref, path).register_forward_hook(hook(name))
               for name, path in EXPECTED[model]]
    with torch.no_grad():
        ref((x - IMAGENET_MEAN) / IMAGENET_STD)
        ours = net.features(x, names)
    for h in handles:
        h.remove()
    assert list(ours) == names
    chans = tvm.channels(backbones.arch_of(model))
    for name in names:
        assert ours[name].shape == seen[name].shape, name
        assert ours[name].shape[1] == chans[name], name
        assert close(ours[name], seen[name]), (name, (ours[name] - seen[name]).abs().max())
        assert ours[name].dtype == torch.float32
    # a layer alone gives what it gave among all the others
    with torch.no_grad():
        alone = net.features(x, [names[5]])
    assert list(alone) == [names[5]] and torch.equal(alone[names[5]], ours[names[5]])


def test_inception_input_is_what_transform_input_gives():
    """Inception v3's weights expect inputs in [-1, 1]: torchvision's transform_input turns an
    ImageNet-normalised image into (x - 0.5) / 0.5, which is what impasto feeds it."""
    x = torch.rand(1, 3, 5, 7)
    net = tvm.TorchvisionBackbone("inception_v3", "conv1a")
    tv = torchvision.models.inception_v3(weights=None, aux_logits=False, transform_input=True,
                                         init_weights=False)
    expected = tv._transform_input((x - IMAGENET_MEAN) / IMAGENET_STD)
    assert torch.allclose(net.preprocess(x), expected, atol=1e-6)
    assert torch.allclose(net.preprocess(x), x * 2 - 1, atol=1e-6)
    res = tvm.TorchvisionBackbone("resnet50", "conv1")
    assert torch.allclose(res.preprocess(x), (x - IMAGENET_MEAN) / IMAGENET_STD, atol=1e-6)


@pytest.mark.parametrize("model", MODELS)
def test_spatial_table_and_min_side_match_the_real_network(model, saved):
    """backbones.min_side comes from a table of kernels, strides and paddings; check it (and
    the size it predicts for every layer) against the real network."""
    _, path = saved[model]
    names = backbones.layers(model)
    net, _ = backbones.build(model, [names[-1]], weights_path=str(path))
    for side in (75, 90, 99):
        with torch.no_grad():
            feats = net.features(torch.rand(1, 3, side, side + 1), names)
        for name in names:
            assert feats[name].shape[-2:] == (backbones.out_side(model, name, side),
                                              backbones.out_side(model, name, side + 1)), name
    for name in names:
        need = backbones.min_side(model, [name])
        with torch.no_grad():
            f = net.features(torch.rand(1, 3, need, need + 2), [name])[name]
        assert min(f.shape[-2:]) >= 1, name
        if need > 1:
            with pytest.raises(RuntimeError):
                net.features(torch.rand(1, 3, need - 1, need + 2), [name])
    assert backbones.min_side("inception_v3", ["mixed7c"]) == 75


@pytest.mark.parametrize("model, last, kept, dropped", [
    ("resnet50", "res3a", ["conv1", "bn1", "layer1", "layer2"], ["layer3", "layer4", "fc"]),
    ("inception_v3", "mixed5b", ["Conv2d_4a_3x3", "Mixed_5b"],
     ["Mixed_5c", "Mixed_6a", "Mixed_7c", "AuxLogits", "fc"]),
    ("mobilenet_v2", "block4", ["features"], ["classifier"]),
])
def test_truncation_holds_and_runs_nothing_past_the_deepest_layer(model, last, kept, dropped,
                                                                   saved):
    _, path = saved[model]
    net, _ = backbones.build(model, ["conv1" if model != "inception_v3" else "conv1a", last],
                             weights_path=str(path))
    children = set(dict(net.net.named_children()))
    assert set(kept) <= children and not (set(dropped) & children)
    if model == "resnet50":
        assert len(net.net.layer2) == 1
    if model == "mobilenet_v2":
        assert len(net.net.features) == 5                       # features.0 ... features.4
    assert net.names[-1] == last
    full = reference(model)
    assert sum(p.numel() for p in net.parameters()) < sum(p.numel() for p in full.parameters()) / 3
    ran = []
    handles = [m.register_forward_hook(lambda m, i, o, n=n: ran.append(n))
               for n, m in net.net.named_modules() if n]
    with torch.no_grad():
        net.features(torch.rand(1, 3, 80, 80), [last])
    for h in handles:
        h.remove()
    assert dict(EXPECTED[model])[last] in ran                  # the last layer's module ran
    with pytest.raises(ValueError):
        net.features(torch.rand(1, 3, 80, 80), [backbones.layers(model)[-1]])


@pytest.mark.parametrize("model", MODELS)
def test_default_layers_build_and_give_features(model, saved):
    _, path = saved[model]
    content, style = backbones.default_layers(model)
    net, _ = backbones.build(model, content + style, weights_path=str(path))
    assert net.names[-1] == backbones.deepest(model, content + style)
    with torch.no_grad():
        feats = net.features(torch.rand(1, 3, SIDE[model], SIDE[model]), content + style)
    assert set(feats) == set(content + style)
    assert all(torch.isfinite(f).all() and min(f.shape[-2:]) >= 2 for f in feats.values())


def test_bf16_autocast_channels_last_is_close_to_fp32(saved):
    _, path = saved["resnet50"]
    net, _ = backbones.build("resnet50", ["res3a"], weights_path=str(path))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        f32 = net.features(x, ["res3a"])["res3a"].clone()
        net.set_precision(torch.bfloat16)
        bf = net.features(x, ["res3a"])["res3a"]
    assert bf.dtype == torch.bfloat16
    assert (bf.float() - f32).abs().mean() < 0.05 * f32.abs().mean()


# ============================================================================= weights
def test_wrong_weights_are_a_user_error(saved, tmp_path):
    _, mobilenet = saved["mobilenet_v2"]
    with pytest.raises(UserError, match=r"mobilenet_v2-random\.pth.*(missing|shape)"):
        backbones.build("resnet50", ["res2a"], weights_path=str(mobilenet))
    bad = tmp_path / "shapes.pth"
    sd = reference("resnet50").state_dict()
    sd["conv1.weight"] = torch.zeros(32, 3, 7, 7)
    torch.save(sd, bad)
    with pytest.raises(UserError, match=r"shapes\.pth: conv1.weight has shape \(32, 3, 7, 7\)"):
        backbones.build("resnet50", ["relu1"], weights_path=str(bad))
    with pytest.raises(UserError, match="no such file"):
        backbones.build("resnet50", ["relu1"], weights_path=str(tmp_path / "none.pth"))
    empty = tmp_path / "empty.pth"
    torch.save({}, empty)
    with pytest.raises(UserError, match="not a state dict"):
        backbones.build("mobilenet_v2", ["conv1"], weights_path=str(empty))


def test_wrapped_checkpoints_and_missing_batch_counters_load(saved, tmp_path):
    ref, _ = saved["mobilenet_v2"]
    sd = {k: v for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": sd, "epoch": 9}, path)
    net, _ = backbones.build("mobilenet_v2", ["block3"], weights_path=str(path))
    assert torch.equal(net.net.features[3].conv[0][0].weight, sd["features.3.conv.0.0.weight"])


@pytest.fixture
def hub_home(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.mark.parametrize("model", MODELS)
def test_weights_from_the_hub_cache(model, saved, hub_home):
    ref, path = saved[model]
    url = weights.HUB_URLS[model]
    assert url.startswith("https://download.pytorch.org/models/")
    dest = weights.hub_path(url)
    assert dest == hub_home / os.path.basename(url)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(path.read_bytes())
    last = backbones.layers(model)[2]
    net, weights_id = backbones.build(model, [last])
    assert weights_id.startswith(dest.name)
    first_conv = next(m for m in net.net.modules() if isinstance(m, torch.nn.Conv2d))
    ref_conv = next(m for m in ref.modules() if isinstance(m, torch.nn.Conv2d))
    assert torch.equal(first_conv.weight, ref_conv.weight)


def test_published_urls_are_torchvisions():
    from torchvision.models import Inception_V3_Weights, MobileNet_V2_Weights, ResNet50_Weights
    assert weights.HUB_URLS["resnet50"] == ResNet50_Weights.IMAGENET1K_V1.url
    assert weights.HUB_URLS["inception_v3"] == Inception_V3_Weights.IMAGENET1K_V1.url
    assert weights.HUB_URLS["mobilenet_v2"] == MobileNet_V2_Weights.IMAGENET1K_V1.url


def test_download_checks_the_hash_and_offline_says_what_to_download(saved, hub_home, tmp_path,
                                                                    monkeypatch):
    _, path = saved["resnet50"]
    payload = path.read_bytes()
    digest = hashlib.sha256(payload).hexdigest()
    server = tmp_path / "server"
    server.mkdir()
    wrong = "0123abcd" if not digest.startswith("0123abcd") else "abcd0123"
    (server / f"resnet50-{wrong}.pth").write_bytes(payload)
    monkeypatch.setitem(weights.HUB_URLS, "resnet50", (server / f"resnet50-{wrong}.pth").as_uri())
    with pytest.raises(UserError, match="does not match its hash"):
        backbones.build("resnet50", ["relu1"])
    assert not hub_home.exists() or list(hub_home.iterdir()) == []
    good = server / f"resnet50-{digest[:8]}.pth"
    good.write_bytes(payload)
    monkeypatch.setitem(weights.HUB_URLS, "resnet50", good.as_uri())
    net, weights_id = backbones.build("resnet50", ["relu1"])       # downloaded, hash checked
    assert (hub_home / good.name).read_bytes() == payload and weights_id.startswith(good.name)
    # offline: the URL to download and the file to save it as
    url = "http://127.0.0.1:9/mobilenet_v2-b0353104.pth"
    monkeypatch.setitem(weights.HUB_URLS, "mobilenet_v2", url)
    with pytest.raises(UserError) as e:
        backbones.build("mobilenet_v2", ["conv1"])
    msg = str(e.value)
    assert url in msg and str(hub_home / "mobilenet_v2-b0353104.pth") in msg and "--weights" in msg


def test_missing_torchvision_is_one_clear_error(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "torchvision", None)      # import torchvision fails
    with pytest.raises(UserError) as e:
        backbones.build("inception_v3", ["conv1a"])
    assert str(e.value) == "option --model: inception_v3 needs torchvision: pip install impasto[models]"


# ============================================================================= runs
def test_estimate_for_a_torchvision_model(saved):
    _, path = saved["resnet50"]
    net, _ = backbones.build("resnet50", ["res3d"], weights_path=str(path))
    net.model = "resnet50"
    info = estimate.estimate("resnet50", ["res3d", "relu1"], [(64, 2), (128, 1)], (48, 64), "fp32",
                             estimate.measure_throughput(net, "res3d", torch.device("cpu"), side=64,
                                                         repeats=1))
    assert info["peak_bytes"] > estimate.BASE_BYTES and info["flops"] > 0 and info["seconds"] > 0
    # FLOPs grow with the pixels, about 4x for twice the side
    small = estimate.step_flops("resnet50", "res3d", (64, 64))
    assert 3.5 < estimate.step_flops("resnet50", "res3d", (128, 128)) / small < 4.5


def test_api_runs_every_model_with_its_default_layers(saved, content_image, style_image):
    for model in MODELS:
        _, path = saved[model]
        size = SIDE[model] + 16
        r = impasto.run("transfer", content_image, style_image, model=model, weights=str(path),
                        size=size, steps=2, scales=1, seed=0, precision="fp32")
        content, style = backbones.default_layers(model)
        assert r.config.content_layers == content and r.config.style_layers == style
        assert r.tensor.shape[-1] == size and torch.isfinite(r.tensor).all()
        assert r.outcome.steps == 2
    tex = impasto.run("texture", None, style_image, model="mobilenet_v2",
                      weights=str(saved["mobilenet_v2"][1]), size=64, steps=2, seed=0)
    assert tex.config.style_layers == backbones.default_layers("mobilenet_v2")[1]
    with pytest.raises(UserError, match="layer mixed7c needs at least 75 px"):
        impasto.run("transfer", content_image, style_image, model="inception_v3",
                    style_layers=["conv1a", "mixed7c"], weights=str(saved["inception_v3"][1]),
                    size=64, steps=1, scales=1)
    with pytest.raises(UserError, match="--pooling"):
        impasto.run("transfer", content_image, style_image, model="resnet50", pooling="avg",
                    weights=str(saved["resnet50"][1]), size=64, steps=1)


def test_cli_transfer_with_resnet50_end_to_end(saved, image_files, run_cli):
    _, path = saved["resnet50"]
    out = image_files["out"] / "r50.png"
    proc = run_cli("transfer", image_files["content"], image_files["style"], "-o", out,
                   "--model", "resnet50", "--weights", path, "--steps", "3", "--size", "64")
    assert proc.returncode == 0, proc.stderr
    assert out.is_file()
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["options"]["model"] == "resnet50"
    assert rec["options"]["content_layers"] == ["res3d"]
    assert rec["options"]["style_layers"] == ["relu1", "res2a", "res3a", "res4a"]
    assert rec["weights"].startswith(path.name)
    assert "estimated peak memory" in proc.stderr
    # repeat from the record with another model: its layers become that model's defaults
    again = image_files["out"] / "m2.png"
    proc = run_cli("transfer", "--from-record", out.with_suffix(".json"), "-o", again,
                   "--model", "mobilenet_v2", "--weights", saved["mobilenet_v2"][1], "--quiet")
    assert proc.returncode == 0, proc.stderr
    rec2 = json.loads(again.with_suffix(".json").read_text())
    assert rec2["options"]["style_layers"] == backbones.default_layers("mobilenet_v2")[1]
    # an unknown layer is one line naming the closest
    proc = run_cli("transfer", image_files["content"], image_files["style"], "-o", out,
                   "--model", "resnet50", "--weights", path, "--content-layers", "res3e")
    assert proc.returncode == 2 and "did you mean" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
