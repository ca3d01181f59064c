"""Images in and out: reading any Pillow file safely, conversion to and from tensors,
resizing, output checks, and atomic writes with PNG text metadata.

Inside impasto an image is a float32 tensor of shape (1, 3, H, W), RGB, values in [0, 1].

Every front end (CLI, studio, batch runner) reads and writes through here, so each rule lives
once: a user's mistake is a ``UserError`` with one line; nothing is ever half-written; no
input is ever overwritten; an input is sized from its header before any pixel is decoded.
"""
from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import stat
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from . import config
from .errors import UserError, show_path

# probe() is the size gate, with a limit the user can raise (--max-input-pixels) and a message
# that says how; Pillow's own guard would fire first, at a fixed limit, with its own words.
# (Code that opens a user's file with Image.open directly should call probe() first.)
Image.MAX_IMAGE_PIXELS = None

# The process umask, for the permissions of written files. os.umask can only be read by
# setting it; the strict value in between never loosens a file created meanwhile.
_UMASK = os.umask(0o077)
os.umask(_UMASK)

_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}
_BAND_PIXELS = 1 << 20      # pixels converted to RGB at a time when reducing a large image


# ----------------------------------------------------------------------------- inputs
def _kind(mode: int) -> str | None:
    """What a non-regular file is, in words; None for a regular file."""
    for test, words in ((stat.S_ISREG, None), (stat.S_ISDIR, "a folder"),
                        (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                        (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                        (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return words
    return "not a regular file"


def check_input_file(path, what: str = "image", noun: str = "an image file") -> Path:
    """``path`` as a Path if it is a regular file this process may read; else one line.

    Nothing is opened: a FIFO would block the open, a device would be read forever."""
    if str(path) == "":       # Path("") is ".", the current folder
        raise UserError(f"{what}: the file name is empty ({show_path(path)}); give a file")
    path = Path(path)
    label = f"{what} {show_path(path)}"
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        if os.path.islink(path):
            raise UserError(f"{label}: no such file (it is a symbolic link to "
                            f"{os.readlink(path)}, which does not exist)") from None
        raise UserError(f"{label}: no such file (check the path)") from None
    except OSError as e:
        raise UserError(f"{label}: cannot read it ({e.strerror}); check the path and its "
                        "permissions") from None
    kind = _kind(st.st_mode)
    if kind:
        raise UserError(f"{label}: is {kind}, not {noun}")
    eff = os.access in os.supports_effective_ids
    if not os.access(path, os.R_OK, effective_ids=eff):
        raise UserError(f"{label}: cannot read it (permission denied); check its permissions")
    return path


def _open_regular(path: Path, label: str):
    """A binary file object of the regular file ``path``. Opened non-blocking and checked
    again on the open descriptor, so a file swapped for a FIFO meanwhile is still refused."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise UserError(f"{label}: cannot read it ({e.strerror})") from None
    kind = _kind(os.fstat(fd).st_mode)
    if kind:
        os.close(fd)
        raise UserError(f"{label}: is {kind}, not an image file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


@contextlib.contextmanager
def _opened(source, what):
    """(binary file object, label for messages) of a path, bytes or a file object."""
    if isinstance(source, (str, os.PathLike)):
        path = check_input_file(source, what)
        label = f"{what} {show_path(path)}"
        with _open_regular(path, label) as fh:
            yield fh, label
    elif isinstance(source, (bytes, bytearray, memoryview)):
        yield io.BytesIO(source), what
    elif hasattr(source, "read"):
        seekable = getattr(source, "seekable", lambda: False)()
        pos = source.tell() if seekable else None
        try:
            yield (source if seekable else io.BytesIO(source.read())), what
        finally:
            if seekable:
                source.seek(pos)
    else:
        raise UserError(f"{what}: expected a file path, bytes or a binary file object, "
                        f"got {type(source).__name__}")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _open_image(fh, label: str, max_pixels) -> Image.Image:
    """Pillow's lazy open (the header only), refused above ``max_pixels``."""
    try:
        im = Image.open(fh)
    except UnidentifiedImageError:
        raise UserError(f"{label}: not an image Pillow can read (is it a PNG, JPEG, ...?)") from None
    except Exception as e:  # a damaged header can raise almost anything inside a plugin
        raise UserError(f"{label}: cannot read image, the file may be truncated or corrupt "
                        f"({_one_line(e)})") from None
    w, h = im.size
    if max_pixels is not None and w * h > max_pixels:
        im.close()
        raise UserError(f"{label}: {w}x{h} is {w * h:,} pixels, above the limit of "
                        f"{max_pixels:,}; raise it with --max-input-pixels N if you trust the file")
    return im


def _orientation(im: Image.Image, decoded: bool) -> int:
    """The EXIF orientation (1 when none or unreadable). A PNG's eXIf chunk may follow the
    pixels; before decoding, only one in the header is looked at (never decode to probe)."""
    if not decoded and isinstance(im, PngImagePlugin.PngImageFile) and "exif" not in im.info:
        return 1
    try:
        return int(im.getexif().get(0x0112) or 1)
    except Exception:
        return 1


def probe(source, what: str = "image", max_pixels=config.MAX_INPUT_PIXELS) -> tuple[int, int]:
    """(width, height) as displayed (EXIF rotation applied), read from the header alone;
    UserError for an unusable file or one above ``max_pixels``."""
    with _opened(source, what) as (fh, label), _open_image(fh, label, max_pixels) as im:
        w, h = im.size
        return (h, w) if _orientation(im, decoded=False) in (5, 6, 7, 8) else (w, h)


def _reduce_factor(long: int, long_side) -> int:
    """The largest integer factor that keeps a long side of ``long`` at >= 2 * long_side
    (1: no reduction; an input at most twice the needed size is decoded as it is)."""
    need = 2 * long_side if long_side else 0
    return max(1, (long - 1) // (need - 1)) if need > 1 and long > need else 1


def _draft_size(w: int, h: int, long_side) -> tuple[int, int] | None:
    """The size to ask a JPEG's DCT scaling for (it picks a scale at or above it), or None."""
    if _reduce_factor(max(w, h), long_side) == 1:
        return None
    s = 2 * long_side / max(w, h)
    return max(1, math.ceil(w * s)), max(1, math.ceil(h * s))


def load(source, *, long_side=None, max_pixels=config.MAX_INPUT_PIXELS,
         what: str = "image") -> Image.Image:
    """Read an image file as 8-bit RGB, EXIF orientation applied.

    ``source``: a path, bytes, or a binary file object (read from its start). ``long_side``:
    the largest long side the caller will resize to; a larger input is decoded at no more
    than twice that (JPEG DCT scaling, then Pillow's box reduce), so memory follows
    ``long_side`` rather than the file. Grayscale, palette, CMYK and 16-bit inputs are
    converted; transparency is composited on white. ``what`` names the input in messages.
    """
    with _opened(source, what) as (fh, label):
        im = _open_image(fh, label, max_pixels)
        try:
            w, h = im.size
            if _draft_size(w, h, long_side):
                im.draft(None, _draft_size(w, h, long_side))  # JPEG only; a no-op elsewhere
            im.load()
            turn = _TRANSPOSE.get(_orientation(im, decoded=True))
            out = _reduce_to_rgb(im, _reduce_factor(max(im.size), long_side))
        except Exception as e:
            im.close()
            if isinstance(e, UserError):
                raise
            if isinstance(e, MemoryError):
                raise UserError(f"{label}: not enough memory to decode this {w}x{h} image; "
                                "give a smaller file") from None
            raise UserError(f"{label}: cannot read image, the file may be truncated or corrupt "
                            f"({_one_line(e)})") from None
    return out.transpose(turn) if turn is not None else out


def _reduce_to_rgb(im: Image.Image, factor: int) -> Image.Image:
    """to_rgb(im).reduce(factor), without ever holding the whole image in RGB or float."""
    if factor == 1:
        return to_rgb(im)
    if im.mode in ("L", "RGB"):                  # reducing first is exact for these
        return to_rgb(im.reduce(factor))
    w, h = im.size
    peak = _value_peak(im)                       # of the whole image, not of one band
    out = Image.new("RGB", (-(-w // factor), -(-h // factor)))
    rows = factor * max(1, _BAND_PIXELS // (w * factor))
    for y in range(0, h, rows):
        band = to_rgb(im.crop((0, y, w, min(h, y + rows))), peak=peak)
        out.paste(band.reduce(factor), (0, y // factor))
    return out


def _value_peak(im: Image.Image):
    """The value that maps to 255 for integer and float modes (None for 8-bit modes)."""
    if im.mode.startswith("I;16"):
        return 65535.0           # 16-bit always spans 0-65535: a dark image must stay dark
    if im.mode == "I":           # no fixed range: guess from the values
        return 65535.0 if im.getextrema()[1] > 255 else 255.0
    if im.mode == "F":
        return 1.0 if im.getextrema()[1] <= 1.0 else 255.0
    return None


def to_rgb(im: Image.Image, peak=None) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; alpha composited on white. ``peak``: the sample value
    that becomes 255 for 16/32-bit and float modes (default: from the image)."""
    if im.mode.startswith("I") or im.mode == "F":
        peak = peak or _value_peak(im)
        arr = np.asarray(im, dtype=np.float64)   # a new array: the steps below work in place
        np.nan_to_num(arr, copy=False, nan=0.0, posinf=peak, neginf=0.0)
        arr /= peak
        arr *= 255.0
        arr += 0.5
        np.clip(arr, 0, 255, out=arr)
        im = Image.fromarray(arr.astype(np.uint8), "L")
        del arr
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


# ----------------------------------------------------------------------------- memory
# Pillow keeps 1, L and P in a byte a pixel, the 16-bit modes in two, everything else
# (RGB included) in four.
_STORED = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
# What to_rgb allocates besides its input, in bytes per pixel, at its peak: the RGB result;
# for alpha, a white canvas, a copy and the composite; for 16/32-bit and float, a float64
# array (plus a raw copy while numpy takes it from Pillow).
_TO_RGB = {"RGB": 0, "RGBA": 12, "RGBa": 12, "LA": 16, "La": 16, "PA": 16,
           "I;16": 10, "I;16B": 10, "I;16L": 10, "I;16N": 10, "I": 12, "F": 12}
_JPEG_COMPONENTS = {"L": 1, "CMYK": 4}


def decode_peak_bytes(width: int, height: int, mode: str, long_side=None, *,
                      fmt: str | None = None, progressive: bool = False,
                      transparency: bool = False) -> int:
    """The memory that ``load(..., long_side=long_side)`` of a ``width`` x ``height`` file
    in Pillow ``mode`` takes at its peak, in bytes, beyond what the process held before.

    ``fmt`` is Pillow's format name: "JPEG" decodes at a DCT scale (a progressive JPEG also
    holds its full-size coefficients, counted without chroma subsampling: an upper bound);
    "WEBP" is decoded by libwebp into buffers of its own; any other or unknown format is
    decoded whole into Pillow's buffer, then converted to RGB and reduced a band at a time.
    ``transparency``: a palette image has a transparent colour (composited on white)."""
    extra = 0
    if fmt == "JPEG" and progressive:          # 16-bit coefficients of every component
        extra = width * height * 2 * _JPEG_COMPONENTS.get(mode, 3)
    draft = _draft_size(width, height, long_side) if fmt == "JPEG" else None
    if draft:                                  # as JpegImagePlugin.draft picks its scale
        scale = min(width // draft[0], height // draft[1])
        scale = next(k for k in (8, 4, 2, 1) if scale >= k)
        width, height = -(-width // scale), -(-height // scale)
    n = width * height
    stored = _STORED.get(mode, 4)
    convert = _TO_RGB.get("PA" if mode == "P" and transparency else mode, 4)
    decoded = n * stored + (n * 12 if fmt == "WEBP" else 0)   # libwebp's buffer and a copy
    factor = _reduce_factor(max(width, height), long_side)
    if factor == 1:
        return extra + decoded + n * convert
    small = -(-width // factor) * -(-height // factor)
    if mode in ("L", "RGB"):
        return extra + decoded + small * (stored + 4 * (mode == "L"))
    band = width * min(height, factor * max(1, _BAND_PIXELS // (width * factor)))
    return extra + decoded + band * (stored + convert + 4) + small * 4


def input_peak_bytes(source, long_side=None, what: str = "image",
                     max_pixels=config.MAX_INPUT_PIXELS) -> int:
    """decode_peak_bytes of one input, from its header (probed, so refused above the limit)."""
    with _opened(source, what) as (fh, label), _open_image(fh, label, max_pixels) as im:
        return decode_peak_bytes(*im.size, im.mode, long_side, fmt=im.format,
                                 progressive=bool(im.info.get("progressive")
                                                  or im.info.get("progression")),
                                 transparency="transparency" in im.info)


# ----------------------------------------------------------------------------- tensors
def to_tensor(image) -> torch.Tensor:
    """PIL image, or a (3,H,W) / (1,3,H,W) tensor in [0,1] (uint8: 0-255), to a (1,3,H,W)
    float32 tensor in [0,1]."""
    if isinstance(image, torch.Tensor):
        t = image.detach()
        if t.dim() == 3:
            t = t.unsqueeze(0)
        if t.dim() != 4 or t.shape[0] != 1 or t.shape[1] != 3:
            raise UserError(f"image tensor must have shape (3,H,W) or (1,3,H,W), got {tuple(image.shape)}")
        return t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
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


# ----------------------------------------------------------------------------- outputs
@functools.lru_cache(maxsize=None)
def _writable_format(ext: str) -> str | None:
    """Pillow's format for ``ext`` if Pillow really writes an RGB image in it, else None."""
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        return None
    try:
        Image.new("RGB", (1, 1)).save(io.BytesIO(), format=fmt)
    except Exception:
        return None
    return fmt


def check_output(path, what: str = "-o") -> Path:
    """Fail now, with one line, if an image cannot be written at ``path`` by save(): the
    format is written for real to memory, and a file is created and removed in the folder."""
    if str(path) == "":
        raise UserError(f"{what}: the file name is empty ({show_path(path)}); give a file name "
                        "such as out.png")
    path = Path(path)
    label = f"{what} {show_path(path)}"
    parent = path.parent
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):   # the folder checks below say which
        st = None
    except OSError as e:
        raise UserError(f"{label}: cannot write there ({e.strerror.lower()})") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise UserError(f"{label}: is a folder; give an output file name such as {path / 'out.png'}")
    if st is not None and not stat.S_ISREG(st.st_mode):
        kind = _kind(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            kind += f" (to {os.readlink(path)})"
        raise UserError(f"{label}: is {kind}; impasto replaces only a regular file, and only "
                        "as a whole (choose another name)")
    if not parent.exists():
        raise UserError(f"{label}: folder {parent} does not exist (create it first)")
    if not parent.is_dir():
        raise UserError(f"{label}: {parent} is not a folder")
    ext = path.suffix.lower()
    if not ext:
        raise UserError(f"{label}: no file extension, so the image format is unknown; "
                        "add one such as .png or .jpg")
    if ext not in Image.registered_extensions():
        raise UserError(f"{label}: unknown image format '{ext}'; use .png or .jpg")
    if _writable_format(ext) is None:
        fmt = Image.registered_extensions()[ext]
        raise UserError(f"{label}: Pillow cannot write {fmt} images ('{ext}'); use .png or .jpg")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=parent)
        try:
            os.write(fd, bytes(4096))       # a full disk or quota refuses data, not names
        finally:
            os.close(fd)
            os.unlink(tmp)
    except OSError as e:
        raise UserError(f"{label}: cannot write to folder {parent} "
                        f"({(e.strerror or str(e)).lower()})") from None
    return path


check_writable = check_output


def _refuse_non_regular(path: Path) -> None:
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return
    if not stat.S_ISREG(mode):
        raise UserError(f"cannot write {path}: it is {_kind(mode)}, and impasto replaces only "
                        "a regular file; nothing was written")


@contextlib.contextmanager
def atomic_path(path):
    """A temporary file name beside ``path`` to write to; synced and renamed into place when
    the block ends without an error and removed when it does not, so a reader never sees a
    half-written file. An OSError (disk full, read-only, permission) becomes one UserError
    line. For writers that want a file name (a video muxer) rather than a file object."""
    path = Path(path)
    _refuse_non_regular(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror}; nothing was written") from None
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())           # a late ENOSPC/EDQUOT shows now, not after rename
        with contextlib.suppress(OSError):
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        _refuse_non_regular(path)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None:
            raise UserError(f"cannot write {path}: {e.strerror}; nothing was written") from None
        raise


def atomic_write(path, write_fn, binary=True) -> None:
    """Write through a temporary file in the same folder and rename it into place."""
    with atomic_path(path) as tmp, open(tmp, "wb" if binary else "w") as fh:
        write_fn(fh)


def encoder(image, path, metadata: dict | None = None):
    """A function that writes ``image`` to a binary file in the format of ``path``'s extension;
    ``metadata`` goes in PNG text chunks."""
    pil = image if isinstance(image, Image.Image) else to_pil(image)
    fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    kwargs = {}
    if fmt == "PNG" and metadata:
        info = PngImagePlugin.PngInfo()
        for k, v in metadata.items():
            info.add_itxt(k, v)
        kwargs["pnginfo"] = info
    elif fmt == "JPEG":
        kwargs["quality"] = 95
    return lambda fh: pil.save(fh, format=fmt, **kwargs)


def save(image, path, metadata: dict | None = None) -> None:
    """Save a PIL image or tensor atomically; ``metadata`` goes in PNG text chunks."""
    atomic_write(path, encoder(image, path, metadata))
