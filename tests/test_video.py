"""Video: flow, warp and occlusions on frames with known motion; reading and writing clips;
the temporal loss; first-mask propagation; and the real ``impasto video`` command (bad input,
an end-to-end run, resume). Clips are made here, tiny (48-64 px, a few frames)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from conftest import EXAMPLES, pil_to_tensor
from test_cli import assert_one_line_error, leftovers

pytest.importorskip("av")
pytest.importorskip("cv2")

from impasto import flow, losses, video, video_io  # noqa: E402
from impasto.config import Config  # noqa: E402


# ----------------------------------------------------------------------------- clips
def texture(width, height, seed=0) -> np.ndarray:
    """Smooth random texture (H, W, 3) uint8: features everywhere for the flow to lock onto."""
    rng = np.random.default_rng(seed)
    small = rng.random((height // 4 + 2, width // 4 + 2, 3))
    im = Image.fromarray((small * 255).astype(np.uint8)).resize((width + 8, height + 8),
                                                                Image.Resampling.BICUBIC)
    return np.asarray(im)


def shifted(base: np.ndarray, dx: int, dy: int, width, height) -> Image.Image:
    """The window of ``base`` at offset (4 + dx, 4 + dy): content moves by (-dx, -dy)."""
    return Image.fromarray(base[4 + dy:4 + dy + height, 4 + dx:4 + dx + width].copy())


def square_clip(n=6, size=64, step=3, side=16, seed=1):
    """A static textured background with a reddish textured square moving right by ``step`` px
    a frame; returns frames (PIL) and the square's true masks (bool arrays)."""
    bg = texture(size, size, seed)[:size, :size]
    sq = (texture(side, side, seed + 8)[:side, :side] * 0.5 + [127, 0, 0]).astype(np.uint8)
    frames, masks = [], []
    for i in range(n):
        arr = bg.copy()
        x0, y0 = 8 + step * i, 24
        arr[y0:y0 + side, x0:x0 + side] = sq
        im = Image.fromarray(arr)
        m = np.zeros((size, size), bool)
        m[y0:y0 + side, x0:x0 + side] = True
        frames.append(im)
        masks.append(m)
    return frames, masks


def tubingen_clip(n, width=64, height=48, shape=True):
    """A slow pan across the example photo (2 px a frame) with a disc moving over it."""
    photo = Image.open(EXAMPLES / "tubingen.jpg").convert("RGB").resize((160, 120))
    frames = []
    for i in range(n):
        im = photo.crop((20 + 2 * i, 30, 20 + 2 * i + width, 30 + height))
        if shape:
            x = 6 + 4 * i
            ImageDraw.Draw(im).ellipse([x, 18, x + 14, 32], fill=(240, 200, 40))
        frames.append(im)
    return frames


# ----------------------------------------------------------------------------- flow
@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_flow_warp_of_a_known_translation_is_exact_within_a_pixel(method):
    base = texture(64, 48, seed=3)
    a = pil_to_tensor(shifted(base, 0, 0, 64, 48))
    b = pil_to_tensor(shifted(base, 3, 2, 64, 48))   # content moved by (-3, -2)
    w = flow.flow(a, b, method)
    inner = (slice(None), slice(None), slice(8, -8), slice(8, -8))
    assert torch.allclose(w[0, 0][inner[2:]].median(), torch.tensor(-3.0), atol=0.25)
    assert torch.allclose(w[0, 1][inner[2:]].median(), torch.tensor(-2.0), atol=0.25)
    err = (w[inner] - torch.tensor([-3.0, -2.0]).view(1, 2, 1, 1)).abs()
    assert err.max() < 1.0, err.max()
    # the backward flow lays a onto b: b(x) ≈ a(x + bwd(x))
    bwd = flow.flow(b, a, method)
    laid = flow.warp(a, bwd)
    assert (laid - b)[inner].abs().mean() < 0.02


def test_warp_with_an_exact_flow_is_exact():
    img = torch.rand(1, 3, 10, 12)
    w = torch.zeros(1, 2, 10, 12)
    w[:, 0] = 2.0                                   # sample two columns to the right
    out = flow.warp(img, w)
    assert torch.allclose(out[..., :, :-2], img[..., :, 2:], atol=1e-5)
    assert torch.allclose(flow.warp(img, torch.zeros(1, 2, 10, 12)), img, atol=1e-6)


def test_occlusion_finds_a_revealed_region():
    frames, masks = square_clip(n=2, step=6)
    a, b = pil_to_tensor(frames[0]), pil_to_tensor(frames[1])
    fwd, bwd = flow.flow(a, b), flow.flow(b, a)
    occ = flow.occlusion(fwd, bwd)[0, 0].numpy()
    revealed = masks[0] & ~masks[1]                   # background uncovered behind the square
    static = ~(masks[0] | masks[1])
    static[:4] = static[-4:] = False
    static[:, :4] = static[:, -4:] = False
    # most of the revealed strip is flagged, almost none of the still background
    assert occ[revealed].mean() > 0.5, occ[revealed].mean()
    far = static.copy()
    far[16:48, :] = False                             # away from the square's rows
    assert occ[far].mean() < 0.05, occ[far].mean()


def test_occlusion_flags_pixels_that_entered_the_frame():
    w = torch.zeros(1, 2, 8, 8)
    w[:, 0] = -3.0                                    # every pixel came from 3 px to the left
    assert flow.outside(w)[0, 0, :, :3].all() and not flow.outside(w)[0, 0, :, 3:].any()


def test_temporal_loss_by_hand():
    x = torch.zeros(1, 3, 2, 2)
    target = torch.ones(1, 3, 2, 2)
    c = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
    # three pixels of four count, each 3 channels of error 1: 9 / 12
    assert losses.temporal_loss(x, target, c).item() == pytest.approx(0.75)
    assert losses.temporal_loss(target, target, c).item() == 0.0


def test_objective_reports_a_temporal_term(vgg19):
    content = torch.rand(1, 3, 32, 32)
    obj = losses.Objective(vgg19, content=content, content_layers=["relu2_1"], tv_weight=0,
                           content_weight=1.0, style_weight=1.0, tv_norm="squared",
                           style_stat="gram", temporal=(torch.zeros_like(content), torch.ones(1, 1, 32, 32)),
                           temporal_weight=10.0)
    assert obj.terms == ("content", "style", "tv", "temporal")
    total, terms = obj(content)
    expected = content.pow(2).mean().item()
    assert terms[3].item() == pytest.approx(expected, rel=1e-5)
    assert total.item() == pytest.approx(10 * expected, rel=1e-4)


def test_first_mask_propagation_follows_a_translating_square():
    frames, masks = square_clip(n=7, step=3)
    labels = torch.stack([torch.from_numpy(~masks[0]), torch.from_numpy(masks[0])]).float()
    prev = pil_to_tensor(frames[0])
    for i in range(1, len(frames)):
        cur = pil_to_tensor(frames[i])
        labels = video.propagate_labels(labels, flow.flow(prev, cur), prev, cur)
        prev = cur
        got, true = labels[1].numpy() > 0.5, masks[i]
        iou = (got & true).sum() / (got | true).sum()
        assert iou > 0.9, (i, iou)
    # after 6 frames the square has moved 18 px and the mask with it, leaving no trail
    ys, xs = np.nonzero(labels[1].numpy() > 0.5)
    assert abs(xs.mean() - (8 + 18 + 7.5)) < 1.0 and abs(ys.mean() - (24 + 7.5)) < 1.0


# ----------------------------------------------------------------------------- reading, writing
@pytest.mark.parametrize("name", ["clip.mp4", "clip.gif", "frames"])
def test_round_trip(tmp_path, name):
    frames = tubingen_clip(5)
    out = tmp_path / name
    video_io.write(frames, out, fps=10)
    src = video_io.open_source(out)
    assert src.count == 5 and src.size == (64, 48)
    back = list(src.frames())
    assert len(back) == 5 and all(im.size == (64, 48) for im in back)
    tol = {"clip.mp4": 12, "clip.gif": 12, "frames": 0}[name]
    for a, b in zip(frames, back):
        diff = np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean()
        assert diff <= tol, (name, diff)
    if name != "frames":
        assert src.fps == pytest.approx(10, rel=0.05)
    assert [p.name for p in tmp_path.iterdir()] == [name]     # no temp files left


def test_start_duration_fps_and_globs(tmp_path):
    video_io.write(tubingen_clip(12), tmp_path / "c.mp4", fps=12)
    assert video_io.open_source(tmp_path / "c.mp4", fps=6).count == 6
    assert video_io.open_source(tmp_path / "c.mp4", start=0.5, duration=0.25).count == 3
    video_io.write(tubingen_clip(4), tmp_path / "f", fps=12)
    (tmp_path / "f" / "notes.txt").write_text("x")
    src = video_io.open_source(str(tmp_path / "f" / "*.png"))
    assert src.kind == "frames" and src.count == 4


def test_audio_is_copied(tmp_path):
    import av
    frames = tubingen_clip(6)
    src_path = tmp_path / "with_audio.mp4"
    with av.open(str(src_path), "w") as o:
        vs = o.add_stream("libx264", rate=12)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        a = o.add_stream("aac", rate=22050)
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_image(f)
            vf.pts = i
            for p in vs.encode(vf):
                o.mux(p)
        for p in vs.encode():
            o.mux(p)
        t = np.arange(11025) / 22050
        samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        for k in range(0, samples.shape[1], 1024):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, k:k + 1024]),
                                            format="flt", layout="mono")
            af.sample_rate, af.pts = 22050, k
            for p in a.encode(af):
                o.mux(p)
        for p in a.encode():
            o.mux(p)
    src = video_io.open_source(src_path)
    assert src.has_audio
    note = video_io.write(src.frames(), tmp_path / "out.mp4", src.fps, audio_from=src)
    assert note == "audio copied"
    with av.open(str(tmp_path / "out.mp4")) as c:
        assert len(c.streams.audio) == 1 and len(c.streams.video) == 1


# ----------------------------------------------------------------------------- the core
def test_temporal_mode_lowers_the_flicker(vgg19, style_image):
    """On a tiny pan, the temporal run's frames differ from the warped previous frame much
    less than independent per-frame runs do, and the records carry a temporal term."""
    frames = tubingen_clip(4, shape=False)
    common = dict(size=48, steps=40, frame_steps=20, seed=3, precision="fp32")
    errs = {}
    for temporal in (True, False):
        cfg = Config.for_task("video", temporal=temporal, temporal_weight=1000, **common)
        out = list(video.stylise(frames, cfg, [style_image]))
        assert [f.index for f in out] == [0, 1, 2, 3]
        assert out[0].temporal_error is None and all(f.temporal_error >= 0 for f in out[1:])
        errs[temporal] = video.summary(f.temporal_error for f in out)
        later = out[1].result
        if temporal:
            assert later.outcome.steps <= 20 and later.schedule == [[48, 20]]
            assert "temporal" in later.history[0]
        else:
            assert "temporal" not in later.history[0]
    assert errs[True] * 3 < errs[False], errs


# ----------------------------------------------------------------------------- the command
def make_clip(folder: Path, name="clip.gif", n=4, shape=True):
    path = folder / name
    video_io.write(tubingen_clip(n, shape=shape), path, fps=8)
    return path


@pytest.fixture
def video_files(tmp_path, style_image):
    style = tmp_path / "style.png"
    style_image.save(style)
    clip = make_clip(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    masks = tmp_path / "masks"
    video_io.write([Image.new("RGB", (64, 48), (255, 0, 0))] * 4, masks, fps=8)
    short_masks = tmp_path / "short_masks"
    video_io.write([Image.new("RGB", (64, 48), (255, 0, 0))] * 3, short_masks, fps=8)
    tall_masks = tmp_path / "tall_masks"
    video_io.write([Image.new("RGB", (20, 60), (255, 0, 0))] * 4, tall_masks, fps=8)
    empty = tmp_path / "empty_frames"
    empty.mkdir()
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(600))
    (tmp_path / "notes.mp4").write_text("not a video\n")
    return {"dir": tmp_path, "style": style, "clip": clip, "out": out, "masks": masks,
            "short_masks": short_masks, "tall_masks": tall_masks, "empty": empty,
            "broken": tmp_path / "broken.mp4", "text": tmp_path / "notes.mp4"}


VIDEO_BAD = {
    "missing input": (lambda f: [f["dir"] / "nope.mp4", f["style"], "-o", f["out"] / "o.mp4"],
                      ["nope.mp4", "no such file"]),
    "broken video": (lambda f: [f["broken"], f["style"], "-o", f["out"] / "o.mp4"],
                     ["broken.mp4"]),
    "text file as video": (lambda f: [f["text"], f["style"], "-o", f["out"] / "o.mp4"],
                           ["notes.mp4"]),
    "empty folder": (lambda f: [f["empty"], f["style"], "-o", f["out"] / "o.mp4"],
                     ["empty_frames", "no frame images"]),
    "start after the end": (lambda f: [f["clip"], f["style"], "-o", f["out"] / "o.mp4",
                                       "--start", "60"], ["no frames", "--start"]),
    "single image as input": (lambda f: [f["style"], f["style"], "-o", f["out"] / "o.mp4"],
                              ["single image"]),
    "unwritable format": (lambda f: [f["clip"], f["style"], "-o", f["out"] / "o.avi"],
                          ["'.avi'", ".mp4"]),
    "output folder missing": (lambda f: [f["clip"], f["style"], "-o", f["out"] / "x" / "o.mp4"],
                              ["does not exist"]),
    "missing style": (lambda f: [f["clip"], f["dir"] / "nostyle.png", "-o", f["out"] / "o.mp4"],
                      ["nostyle.png"]),
    "no style": (lambda f: [f["clip"], "-o", f["out"] / "o.mp4"], ["STYLE"]),
    "mask count": (lambda f: [f["clip"], "-o", f["out"] / "o.mp4", "--mask-video",
                              f["short_masks"], "--region-style", f"red={f['style']}"],
                   ["3 mask frames for 4 video frames"]),
    "mask size": (lambda f: [f["clip"], "-o", f["out"] / "o.mp4", "--mask-video",
                             f["tall_masks"], "--region-style", f"red={f['style']}"],
                  ["tall_masks", "64x48"]),
    "mask colour not listed": (lambda f: [f["clip"], "-o", f["out"] / "o.mp4", "--mask-video",
                                          f["masks"], "--region-style", f"blue={f['style']}"],
                               ["#ff0000", "matches no --region-style"]),
    "region style without masks": (lambda f: [f["clip"], "-o", f["out"] / "o.mp4",
                                              "--region-style", f"red={f['style']}"],
                                   ["--mask-video"]),
    "masks without region style": (lambda f: [f["clip"], "-o", f["out"] / "o.mp4",
                                              "--first-mask", f["style"]], ["--region-style"]),
    "negative frame steps": (lambda f: [f["clip"], f["style"], "-o", f["out"] / "o.mp4",
                                        "--frame-steps", "-1"], ["--frame-steps"]),
    "unknown flow": (lambda f: [f["clip"], f["style"], "-o", f["out"] / "o.mp4", "--flow",
                                "raft"], ["--flow"]),
    "zero fps": (lambda f: [f["clip"], f["style"], "-o", f["out"] / "o.mp4", "--fps", "0"],
                 ["--fps"]),
}


@pytest.mark.parametrize("case", list(VIDEO_BAD))
def test_video_bad_input_is_one_line_and_exit_2(run_cli, video_files, case):
    argv, fragments = VIDEO_BAD[case]
    before = leftovers(video_files["dir"])
    proc = run_cli("video", *argv(video_files))
    assert_one_line_error(proc, *fragments)
    assert leftovers(video_files["out"]) == []
    assert leftovers(video_files["dir"]) == before


FAST = ["--size", "48", "--steps", "12", "--frame-steps", "6", "--precision", "fp32",
        "--seed", "2"]


def test_video_end_to_end_then_resume(run_cli, video_files):
    f = video_files
    out = f["out"] / "styled.mp4"
    proc = run_cli("video", f["clip"], f["style"], "-o", out, *FAST, "--plot")
    assert proc.returncode == 0, proc.stderr
    # work folder removed; the per-frame loss and flicker plot written
    assert leftovers(f["out"]) == ["styled.json", "styled.mp4", "styled_loss.png"]
    with Image.open(f["out"] / "styled_loss.png") as plot:
        assert plot.format == "PNG" and plot.size[0] > 400
    src = video_io.open_source(out)
    assert src.count == 4 and src.size == (48, 36) and src.fps == pytest.approx(8, rel=0.05)
    rec = json.loads((f["out"] / "styled.json").read_text())
    assert rec["task"] == "video" and rec["video"]["frames"] == 4
    assert len(rec["frames"]) == 4 and rec["frames"][0]["temporal_error"] is None
    assert rec["frames"][0]["steps"] == 12 and rec["frames"][1]["steps"] <= 6
    assert "temporal" in rec["frames"][1]["terms"]
    assert rec["result"]["temporal_error"] > 0
    assert "temporal error" in proc.stderr and "frame 4/4" in proc.stderr

    # an interrupted run leaves its finished frames; the same command skips them
    work = f["out"] / "again.gif.frames"
    proc = run_cli("video", f["clip"], f["style"], "-o", f["out"] / "again.gif", *FAST)
    assert proc.returncode == 0, proc.stderr
    first = json.loads((f["out"] / "again.json").read_text())
    assert first["result"]["resumed_frames"] == 0
    # simulate the interruption: rebuild the work folder as it was after two frames
    (f["out"] / "again.gif").unlink()
    (f["out"] / "again.json").unlink()
    proc = subprocess.run([sys.executable, "-c", RESUME_SETUP, str(f["clip"]), str(f["style"]),
                           str(f["out"] / "again.gif")], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in work.iterdir()) == ["000001.png", "000002.png", "state.json"]
    proc = run_cli("video", f["clip"], f["style"], "-o", f["out"] / "again.gif", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert "resuming: 2 finished frames" in proc.stderr
    assert proc.stderr.count("resumed (finished earlier)") == 2
    rec = json.loads((f["out"] / "again.json").read_text())
    assert rec["result"]["resumed_frames"] == 2
    assert [bool(m.get("resumed")) for m in rec["frames"]] == [True, True, False, False]
    assert not work.exists()
    # changed options: the finished frames are not reused
    proc = subprocess.run([sys.executable, "-c", RESUME_SETUP, str(f["clip"]), str(f["style"]),
                           str(f["out"] / "third.gif")], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("video", f["clip"], f["style"], "-o", f["out"] / "third.gif", *FAST,
                   "--temporal-weight", "50")
    assert proc.returncode == 0, proc.stderr
    assert "starting over" in proc.stderr
    assert json.loads((f["out"] / "third.json").read_text())["result"]["resumed_frames"] == 0


# Runs the CLI's own code on the first two frames only, as an interrupted run would leave them.
RESUME_SETUP = r"""
import sys
from impasto import cli, video
from impasto.cli import video as video_cli
clip, style, out = sys.argv[1:4]
args = cli.build_parser().parse_args(["video", clip, style, "-o", out, "--size", "48", "--steps",
                                      "12", "--frame-steps", "6", "--precision", "fp32",
                                      "--seed", "2", "--quiet"])
real = video.stylise
def two(*a, **k):
    for f in real(*a, **k):
        yield f
        if f.index == 1:
            raise KeyboardInterrupt
video.stylise = two
code = video_cli.run(args, [])
assert code == 130, code
"""


def test_regions_with_a_first_mask_through_the_cli(run_cli, video_files):
    f = video_files
    mask = f["dir"] / "mask0.png"
    im = Image.new("RGB", (64, 48), (0, 0, 255))
    ImageDraw.Draw(im).ellipse([6, 18, 20, 32], fill=(255, 0, 0))
    im.save(mask)
    out = f["out"] / "frames"
    proc = run_cli("video", f["clip"], "-o", out, "--first-mask", mask, "--region-style",
                   f"red={f['style']}", "--region-style", "blue=none", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"{i:06d}.png" for i in range(1, 5)]
    rec = json.loads((f["out"] / "frames.json").read_text())
    assert rec["inputs"]["first_mask"] == os.path.join("..", "mask0.png")
    # the background region keeps the video (content only): the last frame's corner is close
    # to the input; the disc region is painted
    src = list(video_io.open_source(f["clip"]).frames())[-1].resize((48, 36))
    got = np.asarray(Image.open(out / "000004.png"), np.float32)
    ref = np.asarray(src, np.float32)
    assert got.shape == (36, 48, 3)
    # the disc is at x 18-32, y 18-32 of 64x48 in the last frame: 13-24 at 48x36
    background = np.abs(got[:, 30:] - ref[:, 30:]).mean()
    disc = np.abs(got[15:23, 15:23] - ref[15:23, 15:23]).mean()
    assert background * 2 < disc, (background, disc)
