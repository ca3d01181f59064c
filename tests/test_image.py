"""Reading images of every kind, tensors in and out, sizes, and atomic writes."""
from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import zlib
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from conftest import pil_to_tensor, synthetic
from impasto import image as io, safe_io
from impasto.errors import UserError


def rgb(im):
    return np.asarray(im, dtype=np.int16)


# ----------------------------------------------------------------------------- modes
def test_rgb_png_loads_unchanged(tmp_path):
    im = synthetic(40, 30)
    im.save(tmp_path / "a.png")
    got = io.load(tmp_path / "a.png")
    assert got.mode == "RGB" and got.size == (40, 30)
    assert np.array_equal(np.asarray(got), np.asarray(im))


def test_exif_orientation_is_applied(tmp_path):
    """Orientation 6: the stored picture must be turned 90° clockwise for display, so a
    48x32 file with a red left half and a blue right half shows as 32x48, red on top."""
    arr = np.zeros((32, 48, 3), np.uint8)
    arr[:, :24] = (255, 0, 0)
    arr[:, 24:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    with Image.open(tmp_path / "rot.jpg") as raw:
        assert raw.size == (48, 32)                     # stored sideways
    got = io.load(tmp_path / "rot.jpg")
    assert got.size == (32, 48)
    expected = np.rot90(arr, k=-1)                      # 90° clockwise
    assert np.abs(rgb(got) - expected.astype(np.int16)).mean() < 8
    top, bottom = got.getpixel((16, 5)), got.getpixel((16, 42))
    assert top[0] > 200 and top[2] < 60            # red on top
    assert bottom[2] > 200 and bottom[0] < 60      # blue below


def test_grayscale_loads_as_rgb(tmp_path):
    arr = np.tile(np.arange(0, 240, 10, dtype=np.uint8), (8, 1))
    Image.fromarray(arr, "L").save(tmp_path / "g.png")
    got = io.load(tmp_path / "g.png")
    assert got.mode == "RGB"
    assert np.array_equal(np.asarray(got), np.repeat(arr[..., None], 3, axis=2))


def test_palette_loads_as_rgb(tmp_path):
    pal = Image.new("P", (6, 4))
    pal.putpalette([10, 20, 30, 200, 100, 50] + [0] * (256 * 3 - 6))
    pal.putdata([0, 1] * 12)
    pal.save(tmp_path / "p.png")
    got = io.load(tmp_path / "p.png")
    assert got.mode == "RGB"
    assert got.getpixel((0, 0)) == (10, 20, 30) and got.getpixel((1, 0)) == (200, 100, 50)


def test_palette_transparency_becomes_white(tmp_path):
    pal = Image.new("P", (4, 4))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    pal.putdata([1] + [0] * 15)
    pal.save(tmp_path / "pt.png", transparency=1)
    got = io.load(tmp_path / "pt.png")
    assert got.mode == "RGB"
    assert got.getpixel((0, 0)) == (255, 255, 255) and got.getpixel((1, 1)) == (255, 0, 0)


def test_rgba_is_composited_on_white(tmp_path):
    arr = np.zeros((2, 3, 4), np.uint8)
    arr[0, 0] = (0, 0, 0, 0)            # fully transparent black -> white
    arr[0, 1] = (10, 200, 30, 255)      # opaque -> unchanged
    arr[0, 2] = (255, 0, 0, 128)        # half red on white -> (255, ~127, ~127)
    arr[1, :] = (0, 0, 0, 255)
    Image.fromarray(arr, "RGBA").save(tmp_path / "a.png")
    got = io.load(tmp_path / "a.png")
    assert got.mode == "RGB"
    assert got.getpixel((0, 0)) == (255, 255, 255)
    assert got.getpixel((1, 0)) == (10, 200, 30)
    r, g, b = got.getpixel((2, 0))
    expected = round(255 * (1 - 128 / 255))
    assert r == 255 and abs(g - expected) <= 1 and abs(b - expected) <= 1
    assert got.getpixel((0, 1)) == (0, 0, 0)


def test_gray_with_alpha_is_composited_on_white(tmp_path):
    la = Image.new("LA", (2, 1))
    la.putdata([(0, 0), (50, 255)])
    la.save(tmp_path / "la.png")
    got = io.load(tmp_path / "la.png")
    assert got.getpixel((0, 0)) == (255, 255, 255) and got.getpixel((1, 0)) == (50, 50, 50)


def test_cmyk_loads_as_rgb(tmp_path):
    cmyk = Image.new("CMYK", (4, 2), (0, 0, 0, 0))      # no ink: white
    cmyk.putpixel((1, 0), (0, 255, 255, 0))            # magenta + yellow: red
    cmyk.putpixel((2, 0), (0, 0, 0, 255))              # black ink: black
    cmyk.save(tmp_path / "c.tif")
    got = io.load(tmp_path / "c.tif")
    assert got.mode == "RGB"
    assert got.getpixel((0, 0)) == (255, 255, 255)
    assert got.getpixel((1, 0)) == (255, 0, 0)
    assert got.getpixel((2, 0)) == (0, 0, 0)


def test_cmyk_jpeg_loads_as_rgb(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    got = io.load(tmp_path / "c.jpg")
    assert got.mode == "RGB" and got.size == (8, 8)
    r, g, b = got.getpixel((4, 4))
    assert r > 230 and g < 25 and b < 25


def test_16_bit_grayscale_is_scaled_to_8_bit(tmp_path):
    arr = (np.arange(32 * 48, dtype=np.uint32).reshape(32, 48) * 42).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as raw:
        assert raw.mode.startswith("I")
    got = io.load(tmp_path / "g16.png")
    assert got.mode == "RGB" and got.size == (48, 32)
    expected = np.floor(arr / 65535.0 * 255.0 + 0.5).astype(np.int16)
    assert np.abs(rgb(got)[..., 0] - expected).max() <= 1
    assert np.array_equal(rgb(got)[..., 0], rgb(got)[..., 2])


def test_dark_16_bit_image_stays_dark(tmp_path):
    """16-bit samples span 0-65535 whatever the picture: a value of 200 is 0.3% grey (1 in
    8 bits), not 200/255."""
    Image.fromarray(np.full((16, 16), 200, np.uint16)).save(tmp_path / "dark16.png")
    got = io.load(tmp_path / "dark16.png")
    assert got.getpixel((3, 3)) == (1, 1, 1)


def test_to_rgb_of_an_in_memory_16_bit_image():
    im = Image.fromarray(np.array([[0, 32768, 65535]], np.uint16))
    assert im.mode == "I;16"
    got = io.to_rgb(im)
    assert [got.getpixel((i, 0))[0] for i in range(3)] == [0, 128, 255]


# ----------------------------------------------------------------------------- bad files
@pytest.mark.parametrize("kind", ["missing", "folder", "truncated", "random", "empty", "text"])
def test_unreadable_files_are_user_errors_naming_the_file(tmp_path, kind):
    path = tmp_path / f"bad_{kind}.jpg"
    if kind == "folder":
        path.mkdir()
    elif kind == "truncated":
        buf = tmp_path / "whole.jpg"
        synthetic(64, 64).save(buf, quality=95)
        path.write_bytes(buf.read_bytes()[: buf.stat().st_size // 2])
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes())
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("hello, not a picture\n")
    with pytest.raises(UserError) as e:
        io.load(path)
    msg = str(e.value)
    assert path.name in msg and "\n" not in msg
    if kind == "missing":
        assert "no such file" in msg
    if kind == "folder":
        assert "folder" in msg


# ----------------------------------------------------------------------------- tensors
def test_to_tensor_and_back_round_trips(synthetic_image):
    t = io.to_tensor(synthetic_image)
    w, h = synthetic_image.size
    assert t.shape == (1, 3, h, w) and t.dtype == torch.float32
    assert torch.allclose(t, pil_to_tensor(synthetic_image))
    assert 0.0 <= t.min() and t.max() <= 1.0
    back = io.to_pil(t)
    assert back.mode == "RGB" and np.array_equal(np.asarray(back), np.asarray(synthetic_image))
    assert np.array_equal(np.asarray(io.to_pil(t[0])), np.asarray(synthetic_image))


def test_to_tensor_accepts_3d_and_4d_tensors_only():
    x = torch.rand(3, 5, 7)
    assert io.to_tensor(x).shape == (1, 3, 5, 7)
    assert torch.equal(io.to_tensor(x)[0], x)
    assert io.to_tensor(x.unsqueeze(0).double()).dtype == torch.float32
    for bad in (torch.rand(5, 7), torch.rand(2, 3, 5, 7), torch.rand(1, 4, 5, 7)):
        with pytest.raises(UserError, match="shape"):
            io.to_tensor(bad)
    with pytest.raises(UserError):
        io.to_tensor(np.zeros((5, 7, 3)))


def test_to_pil_clamps_and_rounds():
    t = torch.tensor([-0.5, 0.5, 1.7]).view(1, 3, 1, 1)
    assert io.to_pil(t).getpixel((0, 0)) == (0, 128, 255)
    t = torch.tensor([0.1 / 255, 0.6 / 255, 254.4 / 255]).view(3, 1, 1)
    assert io.to_pil(t).getpixel((0, 0)) == (0, 1, 254)


@pytest.mark.parametrize("hw, long_side", [((48, 64), 32), ((64, 48), 32), ((30, 100), 50),
                                            ((1000, 7), 64), ((37, 37), 20), ((10, 20), 80)])
def test_fit_size_keeps_the_aspect_ratio(hw, long_side):
    h, w = io.fit_size(*hw, long_side)
    assert max(h, w) == long_side
    assert (h >= w) == (hw[0] >= hw[1])
    # the short side is the rounded exact value
    exact = min(hw) * long_side / max(hw)
    assert abs(min(h, w) - exact) <= 0.5 or min(h, w) == 1


def test_resize_shrinks_within_range_and_keeps_same_size_untouched(synthetic_image):
    t = io.to_tensor(synthetic_image)
    assert io.resize(t, tuple(t.shape[-2:])) is t
    small = io.resize_long(t, 24)
    assert small.shape == (1, 3, 16, 24)
    assert small.min() >= 0 and small.max() <= 1
    # a flat image stays flat
    flat = torch.full((1, 3, 20, 30), 0.25)
    assert torch.allclose(io.resize(flat, (7, 11)), torch.full((1, 3, 7, 11), 0.25), atol=1e-5)


# ----------------------------------------------------------------------------- writing
def test_atomic_save_writes_png_text_and_leaves_no_temp_files(tmp_path, synthetic_image):
    out = tmp_path / "out.png"
    io.save(synthetic_image, out, metadata={"impasto": '{"seed": 3}', "Software": "impasto x"})
    assert sorted(os.listdir(tmp_path)) == ["out.png"]
    with Image.open(out) as im:
        assert im.format == "PNG"
        assert im.text["impasto"] == '{"seed": 3}' and im.text["Software"] == "impasto x"
        assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(synthetic_image))
    # a tensor is saved the same way, and replaces the old file
    io.save(io.to_tensor(synthetic_image).flip(3), out)
    assert sorted(os.listdir(tmp_path)) == ["out.png"]
    with Image.open(out) as im:
        assert np.array_equal(np.asarray(im), np.asarray(synthetic_image)[:, ::-1])


def test_save_jpeg(tmp_path, synthetic_image):
    io.save(synthetic_image, tmp_path / "out.jpg")
    with Image.open(tmp_path / "out.jpg") as im:
        assert im.format == "JPEG" and im.size == synthetic_image.size
    assert os.listdir(tmp_path) == ["out.jpg"]


def test_saved_files_get_the_usual_permissions(tmp_path, synthetic_image):
    """Like any file the user creates (0666 minus the umask), not mkstemp's private 0600."""
    mask = os.umask(0o022)
    os.umask(mask)
    io.save(synthetic_image, tmp_path / "out.png")
    assert stat.S_IMODE((tmp_path / "out.png").stat().st_mode) == 0o666 & ~mask


def test_a_failed_write_keeps_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "record.json"
    path.write_text("old")

    def fail(fh):
        fh.write(b"half")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        io.atomic_write(path, fail)
    assert os.listdir(tmp_path) == ["record.json"]
    assert path.read_text() == "old"


def test_check_writable(tmp_path):
    """The old name of check_output still works, with its old messages."""
    assert io.check_writable(tmp_path / "a.png") == tmp_path / "a.png"
    assert io.check_writable(tmp_path / "a.JPG") == tmp_path / "a.JPG"
    with pytest.raises(UserError, match="does not exist"):
        io.check_writable(tmp_path / "nope" / "a.png")
    with pytest.raises(UserError, match="is a folder"):
        io.check_writable(tmp_path)
    with pytest.raises(UserError, match="unknown image format '.xyz'"):
        io.check_writable(tmp_path / "a.xyz")
    with pytest.raises(UserError, match="no file extension"):
        io.check_writable(tmp_path / "noext")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        io.check_writable(tmp_path / "file" / "a.png")
    assert os.listdir(tmp_path) == ["file"]


# ----------------------------------------------------------------------------- input files
def within(seconds, fn, unblock=None):
    """fn() in a thread; its result or exception, or a failure (not a hang) after
    ``seconds``. ``unblock`` frees a thread stuck in an open() before the test ends."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            box["error"] = e
    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        if unblock:
            unblock()
        pytest.fail(f"still running after {seconds} s (blocked on the file?)")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def one_line_error(fn, *names):
    """The message of the UserError fn() raises, checked to be one line naming ``names``."""
    with pytest.raises(UserError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg, msg
    for name in names:
        assert str(name) in msg, msg
    return msg


def test_a_fifo_is_refused_without_being_opened(tmp_path):
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)

    def unblock():     # a reader blocked in open() returns once a writer comes and goes
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    for fn in (lambda: io.load(fifo, what="content image"),
               lambda: io.probe(fifo, "content image"),
               lambda: io.check_input_file(fifo, "content image"),
               lambda: io.input_peak_bytes(fifo, 64, "content image")):
        msg = one_line_error(lambda: within(20, fn, unblock), fifo)
        assert msg == f"content image {fifo}: is a FIFO (named pipe), not an image file"


@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero"])
def test_a_device_is_refused(device):
    if not os.path.exists(device):
        pytest.skip(f"no {device} here")
    msg = one_line_error(lambda: within(20, lambda: io.load(device, what="style image")), device)
    assert msg == f"style image {device}: is a character device, not an image file"


def test_a_socket_is_refused(tmp_path):
    path = tmp_path / "s.png"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        msg = one_line_error(lambda: within(20, lambda: io.load(path, what="mask")), path)
    assert msg.endswith("is a socket, not an image file")


def test_a_folder_and_a_dangling_link_are_refused(tmp_path):
    msg = one_line_error(lambda: io.check_input_file(tmp_path, "init image"), tmp_path)
    assert msg == f"init image {tmp_path}: is a folder, not an image file"
    link = tmp_path / "link.png"
    link.symlink_to(tmp_path / "gone.png")
    msg = one_line_error(lambda: io.load(link), "link.png", "gone.png")
    assert "no such file" in msg and "symbolic link" in msg


def test_a_regular_file_passes_the_check(tmp_path):
    synthetic(32, 24).save(tmp_path / "a.png")
    assert io.check_input_file(str(tmp_path / "a.png")) == tmp_path / "a.png"
    link = tmp_path / "b.png"
    link.symlink_to(tmp_path / "a.png")          # a link to a regular file is fine
    assert io.load(link).size == (32, 24)


UNREADABLE = """
import os, sys
from impasto import image
from impasto.errors import UserError
os.setegid(65534); os.seteuid(65534)         # nobody: root reads any file
try:
    image.load(sys.argv[1], what="style image")
except UserError as e:
    print(e)
"""


def test_an_unreadable_file_is_refused(tmp_path):
    folder = Path(tempfile.mkdtemp(prefix="impasto-test-"))  # tmp_path is private to root
    try:
        os.chmod(folder, 0o755)
        path = folder / "secret.png"
        synthetic(32, 24).save(path)
        os.chmod(path, 0)
        if os.geteuid() == 0:
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
            run = subprocess.run([sys.executable, "-c", UNREADABLE, str(path)], env=env,
                                 capture_output=True, text=True, timeout=120)
            msg = run.stdout.strip()
            assert run.returncode == 0, run.stderr
        else:
            msg = one_line_error(lambda: io.load(path, what="style image"))
        assert msg == (f"style image {path}: cannot read it (permission denied); "
                       "check its permissions")
    finally:
        shutil.rmtree(folder)


# ----------------------------------------------------------------------------- pixel limit
def bomb_png(path, width, height):
    """A 1-bit grayscale PNG of ``width`` x ``height`` black pixels, written by hand: the
    header claims the full size, the zlib stream of zero rows stays small."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    z = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)                 # filter byte 0, then the bits
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    path = bomb_png(tmp_path_factory.mktemp("bomb") / "bomb.png", 20000, 20000)
    assert path.stat().st_size < 100_000
    return path


def test_the_pixel_limit_is_read_from_the_header(bomb):
    start = time.perf_counter()
    for fn in (lambda: io.probe(bomb, "content image"),
               lambda: io.load(bomb, long_side=64, what="content image")):
        msg = one_line_error(fn, bomb)
        assert msg == (f"content image {bomb}: 20000x20000 is 400,000,000 pixels, above the "
                       "limit of 100,000,000; raise it with --max-input-pixels N if you trust "
                       "the file")
    assert time.perf_counter() - start < 5          # nothing was decoded
    msg = one_line_error(lambda: io.load(bomb.read_bytes(), max_pixels=1000, what="mask"))
    assert msg.startswith("mask: 20000x20000 is 400,000,000 pixels, above the limit of 1,000;")


def test_pillow_s_own_bomb_guard_does_not_fire_first(bomb):
    """Above Pillow's default limit (2 x 89 MP raises) the user's raised limit still rules."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert io.probe(bomb, max_pixels=400_000_000) == (20000, 20000)
        assert io.probe(bomb, max_pixels=None) == (20000, 20000)


BOMB_LOAD = """
import json, sys
import numpy as np
from impasto import image
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
before = rss()
estimate = image.input_peak_bytes(sys.argv[1], 48, max_pixels=400_000_000)
im = image.load(sys.argv[1], long_side=48, max_pixels=400_000_000)
# VmHWM, not ru_maxrss: Linux carries the parent's peak RSS over the exec into ru_maxrss
peak = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(json.dumps({"size": im.size, "mode": im.mode, "max": int(np.asarray(im).max()),
                  "peak": peak, "growth": peak - before, "estimate": estimate}))
"""


def test_a_bomb_decoded_with_a_raised_limit_stays_within_memory(bomb):
    """At long_side=48 the 20000x20000 picture costs Pillow's 1-byte-a-pixel buffer (400 MB)
    and little else: never an RGB copy (1.6 GB) or a float one."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-c", BOMB_LOAD, str(bomb)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    assert got["size"] == [96, 96] and got["mode"] == "RGB" and got["max"] == 0
    assert got["peak"] < 2 * 2**30
    assert got["growth"] < 600 * 2**20
    # the estimate is honest: neither far below nor far above what it cost
    assert got["growth"] - 64 * 2**20 < got["estimate"] < 1.5 * got["growth"] + 64 * 2**20


# ----------------------------------------------------------------------------- decoding small
def exif_jpeg(path, arr, orientation=None, **kw):
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    Image.fromarray(arr).save(path, exif=exif, quality=95, **kw)
    return path


def old_load(path):
    """What load did before it could decode small, for the identity checks."""
    with Image.open(path) as im:
        im.load()
        return io.to_rgb(ImageOps.exif_transpose(im))


def identical(a, b):
    return a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


def test_inputs_at_most_twice_the_size_decode_exactly_as_before(tmp_path):
    arr = np.asarray(synthetic(64, 48))
    files = {"png": tmp_path / "a.png", "jpg": exif_jpeg(tmp_path / "a.jpg", arr),
             "rot": exif_jpeg(tmp_path / "r.jpg", arr, orientation=6)}
    Image.fromarray(arr).save(files["png"])
    Image.fromarray(arr).quantize(32).save(tmp_path / "p.png", transparency=0)
    files["p"] = tmp_path / "p.png"
    Image.fromarray((np.arange(64 * 48).reshape(48, 64) * 21).astype(np.uint16)).save(
        tmp_path / "g16.png")
    files["g16"] = tmp_path / "g16.png"
    for name, path in files.items():
        for long_side in (None, 32, 40, 64, 500):   # 64 px is at most 2 x 32
            assert identical(io.load(path, long_side=long_side), old_load(path)), (name, long_side)


def test_a_large_jpeg_is_decoded_small_and_looks_the_same(tmp_path):
    arr = np.asarray(synthetic(512, 384).resize((512, 384)))
    path = exif_jpeg(tmp_path / "big.jpg", arr)
    small = io.load(path, long_side=32)
    assert 64 <= max(small.size) < 128                   # DCT scale 1/4 or 1/8, not 1/1
    full = io.load(path)
    a = io.resize_long(io.to_tensor(small), 32)
    b = io.resize_long(io.to_tensor(full), 32)
    assert a.shape == b.shape == (1, 3, 24, 32)
    assert (a - b).abs().mean() < 0.02


def test_a_large_rotated_jpeg_is_decoded_small_and_upright(tmp_path):
    arr = np.zeros((256, 512, 3), np.uint8)
    arr[:, :256] = (255, 0, 0)
    arr[:, 256:] = (0, 0, 255)
    path = exif_jpeg(tmp_path / "rot.jpg", arr, orientation=6)
    assert io.probe(path) == (256, 512)
    got = io.load(path, long_side=16)
    assert got.size[0] * 2 == got.size[1] and max(got.size) >= 32
    top, bottom = got.getpixel((got.width // 2, 2)), got.getpixel((got.width // 2, got.height - 3))
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60


@pytest.mark.parametrize("kind", ["L", "RGB", "P-transparent", "LA", "I;16", "1"])
def test_a_large_image_is_reduced_as_if_converted_whole(tmp_path, monkeypatch, kind):
    """Reduced a band at a time (tiny bands here, to have many, and a partial last box),
    the result is the whole image converted to RGB and then box-reduced."""
    monkeypatch.setattr(io, "_BAND_PIXELS", 2000)
    rgb_im = synthetic(200, 151)
    im = {"L": rgb_im.convert("L"), "RGB": rgb_im, "P-transparent": rgb_im.quantize(16),
          "LA": rgb_im.convert("LA"), "1": rgb_im.convert("1"),
          "I;16": Image.fromarray((np.asarray(rgb_im.convert("L"), np.uint16) * 200))}[kind]
    path = tmp_path / "big.png"
    im.save(path, **({"transparency": 2} if kind == "P-transparent" else {}))
    got = io.load(path, long_side=16)                     # 2 x 16 = 32: a factor of 6
    expected = old_load(path).reduce(6)
    assert got.size == (34, 26) and identical(got, expected)


def test_bytes_and_file_objects_load_like_the_file(tmp_path):
    path = tmp_path / "a.png"
    synthetic(64, 48).save(path)
    data = path.read_bytes()
    want = io.load(path, long_side=16)
    assert identical(io.load(data, long_side=16), want)
    assert identical(io.load(bytearray(data), long_side=16), want)
    buf = BytesIO(data)
    buf.seek(5)
    assert io.probe(buf) == (64, 48) and buf.tell() == 5     # the position is kept
    assert identical(io.load(buf, long_side=16), want) and buf.tell() == 5
    with open(path, "rb") as fh:
        assert identical(io.load(fh, long_side=16), want)
    msg = one_line_error(lambda: io.load(b"not an image", what="style image"))
    assert msg == "style image: not an image Pillow can read (is it a PNG, JPEG, ...?)"
    msg = one_line_error(lambda: io.load(data[: len(data) // 2], what="mask"))
    assert msg.startswith("mask: cannot read image, the file may be truncated or corrupt")


def test_decode_peak_bytes_follows_the_needed_size_not_the_file():
    full = io.decode_peak_bytes(10000, 10000, "RGB")
    assert full >= 10000 * 10000 * 4                        # Pillow's RGB is 4 bytes a pixel
    # a JPEG decodes at a DCT scale: its memory follows long_side
    assert io.decode_peak_bytes(10000, 10000, "RGB", 256, fmt="JPEG") < full / 50
    # other formats decode whole, then reduce: little beyond Pillow's buffer
    png = io.decode_peak_bytes(10000, 10000, "RGB", 256, fmt="PNG")
    assert 10000 * 10000 * 4 <= png < 1.1 * 10000 * 10000 * 4
    assert io.decode_peak_bytes(10000, 10000, "L", 256) < 1.1 * 10000 * 10000
    # a palette with transparency and 16-bit images are converted a band at a time
    assert io.decode_peak_bytes(10000, 10000, "P", 256, transparency=True) < 1.5 * 10000 * 10000
    assert io.decode_peak_bytes(10000, 10000, "P", transparency=True) > 10 * 10000 * 10000
    assert io.decode_peak_bytes(10000, 10000, "I;16", 256) < 2.5 * 10000 * 10000
    # inputs at most twice the needed size decode whole, as before
    assert io.decode_peak_bytes(500, 400, "RGB", 256, fmt="JPEG") == io.decode_peak_bytes(500, 400, "RGB")


def test_input_peak_bytes_reads_the_header(tmp_path, bomb):
    synthetic(64, 48).save(tmp_path / "a.png")
    assert io.input_peak_bytes(tmp_path / "a.png") == io.decode_peak_bytes(64, 48, "RGB")
    assert io.input_peak_bytes(bomb, 48, max_pixels=None) == io.decode_peak_bytes(
        20000, 20000, "1", 48, fmt="PNG")
    one_line_error(lambda: io.input_peak_bytes(bomb, 48, "content image"), "--max-input-pixels")


# ----------------------------------------------------------------------------- outputs
@pytest.fixture
def tmpfs(tmp_path):
    """mount(options) -> a fresh tmpfs folder (as root), unmounted after the test."""
    mounted = []

    def mount(options):
        where = tmp_path / f"mnt{len(mounted)}"
        where.mkdir()
        run = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                             capture_output=True, text=True)
        if run.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {run.stderr.strip()}")
        mounted.append(where)
        return where
    yield mount
    for where in mounted:
        subprocess.run(["umount", str(where)], check=True)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".gif", ".ico", ".webp", ".tif", ".bmp"])
def test_check_output_accepts_formats_pillow_writes(tmp_path, ext):
    assert io.check_output(tmp_path / f"out{ext}") == tmp_path / f"out{ext}"
    assert os.listdir(tmp_path) == []                         # its trial file is gone


@pytest.mark.parametrize("ext, fmt", [(".psd", "PSD"),        # no writer at all
                                      (".xbm", "XBM"),        # a writer, but not for RGB
                                      (".msp", "MSP")])
def test_check_output_refuses_formats_pillow_cannot_write(tmp_path, ext, fmt):
    path = tmp_path / f"out{ext}"
    msg = one_line_error(lambda: io.check_output(path), path)
    assert msg == f"-o {path}: Pillow cannot write {fmt} images ('{ext}'); use .png or .jpg"
    assert os.listdir(tmp_path) == []


def test_check_output_refuses_what_is_not_a_regular_file(tmp_path):
    target = tmp_path / "real.png"
    synthetic(32, 24).save(target)
    link = tmp_path / "link.png"
    link.symlink_to(target)
    msg = one_line_error(lambda: io.check_output(link), link)
    assert msg == (f"-o {link}: is a symbolic link (to {target}); impasto replaces only a "
                   "regular file, and only as a whole (choose another name)")
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    msg = one_line_error(lambda: within(20, lambda: io.check_output(fifo, "--save-every")))
    assert msg.startswith(f"--save-every {fifo}: is a FIFO (named pipe); impasto replaces only")
    msg = one_line_error(lambda: io.check_output(tmp_path))
    assert msg == f"-o {tmp_path}: is a folder; give an output file name such as {tmp_path / 'out.png'}"
    assert io.check_output(target) == target                 # a regular file may be replaced


def test_check_output_tries_the_folder_for_real(tmpfs):
    folder = tmpfs("ro,size=1m")
    msg = one_line_error(lambda: io.check_output(folder / "out.png"), folder)
    assert msg == (f"-o {folder / 'out.png'}: cannot write to folder {folder} "
                   "(read-only file system)")


def test_check_output_finds_a_full_disk(tmpfs):
    folder = tmpfs("size=64k")
    (folder / "filler").write_bytes(b"x" * 64 * 1024)
    msg = one_line_error(lambda: io.check_output(folder / "out.png"), folder)
    assert msg.endswith("(no space left on device)")
    assert os.listdir(folder) == ["filler"]


# ----------------------------------------------------------------------------- writing safely
def noise(size=256):
    """An image that does not compress: a PNG of it is about 3 bytes a pixel."""
    return Image.fromarray(np.random.default_rng(1).integers(0, 256, (size, size, 3), np.uint8))


def test_a_full_disk_leaves_nothing_written(tmpfs):
    folder = tmpfs("size=64k")
    out = folder / "out.png"
    msg = one_line_error(lambda: io.save(noise(), out), out)
    assert msg == f"cannot write {out}: No space left on device; nothing was written"
    assert os.listdir(folder) == []
    # an old file stays as it was
    out.write_bytes(b"old")
    one_line_error(lambda: io.save(noise(), out))
    assert os.listdir(folder) == ["out.png"] and out.read_bytes() == b"old"
    one_line_error(lambda: io.atomic_write(folder / "r.json", lambda fh: fh.write(bytes(10**6))))
    assert os.listdir(folder) == ["out.png"]


def test_a_read_only_folder_is_one_line(tmpfs):
    folder = tmpfs("ro,size=1m")
    msg = one_line_error(lambda: io.save(noise(8), folder / "out.png"))
    assert msg == f"cannot write {folder / 'out.png'}: Read-only file system; nothing was written"


def test_save_never_replaces_what_is_not_a_regular_file(tmp_path, synthetic_image):
    folder = tmp_path / "out.png"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    msg = one_line_error(lambda: io.save(synthetic_image, folder), folder)
    assert msg == (f"cannot write {folder}: it is a folder, and impasto replaces only a "
                   "regular file; nothing was written")
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    one_line_error(lambda: within(20, lambda: io.save(synthetic_image, fifo)), "a FIFO")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(os.listdir(tmp_path)) == ["out.png", "pipe.png"]
    assert os.listdir(folder) == ["keep.txt"]


# ----------------------------------------------------------------------------- outputs vs inputs
@pytest.fixture
def photo(tmp_path, monkeypatch):
    sub = tmp_path / "sub"
    sub.mkdir()
    synthetic(32, 24).save(tmp_path / "photo.jpg")
    synthetic(32, 24, seed=1).save(tmp_path / "style.png")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "photo.jpg"


@pytest.mark.parametrize("spelling", ["photo.jpg", "./photo.jpg", "sub/../photo.jpg",
                                      "{dir}/photo.jpg", "symlink", "hardlink", "linked folder"])
def test_an_output_that_is_an_input_is_refused(photo, spelling):
    inputs = {"content image": "photo.jpg", "style image": ["style.png"], "mask": None}
    out = spelling.format(dir=photo.parent)
    if spelling == "symlink":
        out = "link.jpg"
        os.symlink("photo.jpg", out)
    elif spelling == "hardlink":
        out = "hard.jpg"
        os.link("photo.jpg", out)
    elif spelling == "linked folder":
        os.symlink(".", "here")
        out = "here/photo.jpg"
    msg = one_line_error(lambda: safe_io.refuse_overwriting_inputs({"-o": out}, inputs))
    assert msg == (f"-o {out}: is the content image; choose another output name "
                   "(impasto never overwrites its inputs)")
    assert safe_io.same_file(out, photo)


def test_outputs_that_do_not_exist_yet_are_compared_by_path(photo):
    inputs = {"style image": ["style.png", "photo.jpg"]}
    safe_io.refuse_overwriting_inputs({"-o": "new.png", "--save-every": "sub/new.png"}, inputs)
    assert safe_io.same_file("new.png", "sub/../new.png")          # neither exists
    assert not safe_io.same_file("new.png", "photo.jpg")
    msg = one_line_error(lambda: safe_io.refuse_overwriting_inputs(
        {"-o": "out.png", "--plot": "sub/../photo.jpg"}, inputs))
    assert msg.startswith("--plot sub/../photo.jpg: is style image 2; choose another output name")
    # data given in memory has no path to collide with
    safe_io.refuse_overwriting_inputs({"-o": "out.png"}, {"content image": b"\x89PNG"})
