"""Reading images of every kind, tensors in and out, sizes, and atomic writes."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import pil_to_tensor, synthetic
from impasto import image as io
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
    assert io.check_writable(tmp_path / "a.png") == tmp_path / "a.png"
    assert io.check_writable(tmp_path / "a.JPG") == tmp_path / "a.JPG"
    with pytest.raises(UserError, match="does not exist"):
        io.check_writable(tmp_path / "nope" / "a.png")
    with pytest.raises(UserError, match="is a folder"):
        io.check_writable(tmp_path)
    with pytest.raises(UserError, match="unknown image format '.xyz'"):
        io.check_writable(tmp_path / "a.xyz")
    with pytest.raises(UserError, match="unknown image format"):
        io.check_writable(tmp_path / "noext")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        io.check_writable(tmp_path / "file" / "a.png")
    assert os.listdir(tmp_path) == ["file"]
