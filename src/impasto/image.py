"""Images in and out: reading any Pillow file, conversion to and from tensors, resizing,
and atomic writes with PNG text metadata.

Inside impasto an image is a float32 tensor of shape (1, 3, H, W), RGB, values in [0, 1].
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from .errors import UserError

Image.MAX_IMAGE_PIXELS = 400_000_000  # large paintings are legitimate input; still a bomb guard

# The process umask, for the permissions of written files. os.umask can only be read by
# setting it; the strict value in between never loosens a file created meanwhile.
_UMASK = os.umask(0o077)
os.umask(_UMASK)


def load(path) -> Image.Image:
    """Read any Pillow-readable file as an 8-bit RGB image, EXIF orientation applied.

    Grayscale, palette, CMYK and 16-bit inputs are converted; transparency is composited
    on white. Raises UserError with the file name for a missing or unreadable file.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file (check the path)")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not an image file")
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            return to_rgb(im)
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image Pillow can read (is it a PNG, JPEG, ...?)") from None
    except Image.DecompressionBombError as e:
        raise UserError(f"{path}: image too large to read safely ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise UserError(f"{path}: cannot read image, the file may be truncated or corrupt ({e})") from None


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; alpha composited on white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.float64)
        # 16-bit modes always span 0-65535 (a dark 16-bit image must stay dark); a 32-bit 'I'
        # image has no fixed range, so guess from its values.
        peak = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        im = Image.fromarray(arr, "L")
    elif im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        peak = 1.0 if arr.max() <= 1.0 else 255.0
        im = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("LA", "La", "PA"):
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "RGBa"):
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im.convert("RGBA"))
    if im.mode != "RGB":
        im = im.convert("RGB")
    return im


def to_tensor(image) -> torch.Tensor:
    """PIL image, or a (3,H,W) / (1,3,H,W) tensor in [0,1], to a (1,3,H,W) float32 tensor."""
    if isinstance(image, torch.Tensor):
        t = image.detach()
        if t.dim() == 3:
            t = t.unsqueeze(0)
        if t.dim() != 4 or t.shape[0] != 1 or t.shape[1] != 3:
            raise UserError(f"image tensor must have shape (3,H,W) or (1,3,H,W), got {tuple(image.shape)}")
        return t.float()
    if isinstance(image, Image.Image):
        arr = np.asarray(to_rgb(image), dtype=np.float32) / 255.0
        return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()
    raise UserError(f"expected a PIL image or a tensor, got {type(image).__name__}")


def to_pil(t: torch.Tensor) -> Image.Image:
    """A (1,3,H,W) or (3,H,W) tensor in [0,1] to an 8-bit RGB PIL image (clamped, rounded)."""
    t = t.detach().float()
    if t.dim() == 4:
        t = t[0]
    arr = (t.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(arr), "RGB")


def fit_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(h, w) with the long side ``long_side`` and the aspect ratio kept."""
    scale = long_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a (N,C,H,W) tensor; antialiased bicubic when shrinking, bicubic otherwise."""
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    out = F.interpolate(t, size=size, mode="bicubic", align_corners=False, antialias=True)
    return out.clamp(0, 1)


def resize_long(t: torch.Tensor, long_side: int) -> torch.Tensor:
    return resize(t, fit_size(t.shape[-2], t.shape[-1], long_side))


def check_writable(path) -> Path:
    """Fail early, with one line, if ``path`` cannot be written as an image file."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give an output file name such as {path / 'out.png'}")
    if not parent.exists():
        raise UserError(f"{path}: folder {parent} does not exist (create it first)")
    if not parent.is_dir():
        raise UserError(f"{path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{path}: cannot write to folder {parent} (permission denied)")
    ext = path.suffix.lower()
    known = Image.registered_extensions()
    if ext not in known:
        raise UserError(f"{path}: unknown image format '{ext or '(none)'}'; use .png or .jpg")
    return path


@contextlib.contextmanager
def atomic_path(path):
    """A temporary file name beside ``path`` to write to; renamed into place when the block
    ends without an error and removed when it does not, so a reader never sees a half-written
    file. For writers that want a file name (a video muxer) rather than a file object."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent or ".")
    os.close(fd)
    try:
        yield tmp
        try:
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        except OSError:
            pass
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write(path, write_fn, binary=True) -> None:
    """Write through a temporary file in the same folder and rename it into place."""
    with atomic_path(path) as tmp, open(tmp, "wb" if binary else "w") as fh:
        write_fn(fh)


def save(image, path, metadata: dict | None = None) -> None:
    """Save a PIL image or tensor atomically; ``metadata`` goes in PNG text chunks."""
    path = Path(path)
    pil = image if isinstance(image, Image.Image) else to_pil(image)
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    kwargs = {}
    if fmt == "PNG" and metadata:
        info = PngImagePlugin.PngInfo()
        for k, v in metadata.items():
            info.add_itxt(k, v)
        kwargs["pnginfo"] = info
    elif fmt == "JPEG":
        kwargs["quality"] = 95
    atomic_write(path, lambda fh: pil.save(fh, format=fmt, **kwargs))
