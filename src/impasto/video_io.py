"""Videos in and out, with PyAV (which ships its own ffmpeg): frames are streamed one at a time.

A source is a video file (mp4, mov, mkv, webm, gif, ...), a folder of frame images, or a glob of
them (``frames/*.png``); ``--start`` and ``--duration`` cut it, ``--fps`` drops frames to a
lower rate. An output is an .mp4/.mov/.mkv (H.264, libx264 from PyAV's wheel), a .gif (Pillow:
one palette for the whole clip, so the palette itself does not flicker) or a folder of PNG
frames. Every output is written under a temporary name and renamed when complete; the audio
track of a video source is copied into an mp4/mov/mkv output.
"""
from __future__ import annotations

import glob as globmod
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional

from PIL import Image

from . import image as imageio
from .errors import UserError

VIDEO_EXTS = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".gif")
MOVIE_OUT = {".mp4": "mp4", ".mov": "mov", ".m4v": "mp4", ".mkv": "matroska"}
FRAME_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_FPS = 24.0   # for folders of frames without --fps


def _av():
    try:
        import av
    except ImportError:
        raise UserError("video needs PyAV: pip install 'impasto[video]'") from None
    return av


def _natural(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


@dataclass
class Source:
    """A clip to read: ``frames()`` yields 8-bit RGB PIL images one at a time."""
    path: str
    kind: str                       # "video" or "frames"
    fps: float                      # the rate of the frames yielded
    count: int                      # the number of frames yielded
    size: tuple                     # (width, height) of the source frames
    files: Optional[list] = None    # the frame files (kind "frames")
    start: float = 0.0
    duration: Optional[float] = None
    src_fps: float = 0.0
    has_audio: bool = False

    def frames(self) -> Iterator[Image.Image]:
        if self.kind == "frames":
            for f in self.files:
                yield imageio.load(f)
            return
        for _, frame in _decode(self.path, self.start, self.duration, self.fps, self.src_fps):
            yield frame.to_image().convert("RGB")


def _decode(path, start, duration, fps, src_fps, images=True):
    """(time, frame) of the kept frames of a video file, after start/duration/fps."""
    av = _av()
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as e:
        raise UserError(f"{path}: cannot read video ({_msg(e)})") from None
    try:
        if not container.streams.video:
            raise UserError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        last_k, index = -1, 0
        try:
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else index / (src_fps or DEFAULT_FPS)
                index += 1
                if t < start - 1e-6:
                    continue
                rel = t - start
                if duration is not None and rel >= duration - 1e-6:
                    break
                if fps:   # keep the first frame at or after each tick of the --fps clock
                    k = int(rel * fps + 1e-6)
                    if k <= last_k:
                        continue
                    last_k = k
                yield t, frame
        except av.FFmpegError as e:
            raise UserError(f"{path}: cannot decode video ({_msg(e)})") from None
    finally:
        container.close()


def _msg(e):
    return str(getattr(e, "strerror", None) or e).strip()


def open_source(spec, fps=None, start=0.0, duration=None, what="input") -> Source:
    """Open ``spec`` (a video file, a folder of frames or a glob) and check it is readable and
    not empty: the frames are counted here (one decoding pass), so a broken file fails before
    anything is computed or written."""
    spec = str(spec)
    if start < 0:
        raise UserError(f"option --start: must be zero or more, got {start}")
    if duration is not None and duration <= 0:
        raise UserError(f"option --duration: must be positive, got {duration}")
    if fps is not None and fps <= 0:
        raise UserError(f"option --fps: must be positive, got {fps}")
    path = Path(spec)
    if any(ch in spec for ch in "*?[") and not path.exists():
        files = sorted(globmod.glob(spec), key=_natural)
        files = [f for f in files if Path(f).suffix.lower() in FRAME_EXTS]
        if not files:
            raise UserError(f"{spec}: no frame images match this pattern")
        return _frames_source(spec, files, fps, start, duration)
    if not path.exists():
        raise UserError(f"{spec}: no such file or folder (check the path)")
    if path.is_dir():
        files = sorted((str(p) for p in path.iterdir() if p.suffix.lower() in FRAME_EXTS
                        and not p.name.startswith(".")), key=_natural)
        if not files:
            raise UserError(f"{spec}: folder holds no frame images ({', '.join(FRAME_EXTS)})")
        return _frames_source(spec, files, fps, start, duration)
    if path.suffix.lower() in FRAME_EXTS:
        raise UserError(f"{spec}: is a single image; give a video file, a folder of frames or a "
                        "glob such as 'frames/*.png'")
    av = _av()
    try:
        with av.open(spec) as c:
            if not c.streams.video:
                raise UserError(f"{spec}: has no video stream")
            vs = c.streams.video[0]
            src_fps = float(vs.average_rate or vs.guessed_rate or DEFAULT_FPS)
            has_audio = bool(c.streams.audio)
    except av.FFmpegError as e:
        raise UserError(f"{spec}: cannot read video ({_msg(e)})") from None
    count, size = 0, None
    for _, frame in _decode(spec, start, duration, fps, src_fps):
        count += 1
        size = size or (frame.width, frame.height)
    if count == 0:
        raise UserError(f"{spec}: no frames" + (f" after --start {start}" if start else "")
                        + " (empty or unreadable video)")
    return Source(spec, "video", float(min(fps, src_fps) if fps else src_fps), count, size,
                  start=start, duration=duration, src_fps=src_fps, has_audio=has_audio)


def _frames_source(spec, files, fps, start, duration):
    rate = float(fps or DEFAULT_FPS)
    first = int(round(start * rate))
    last = len(files) if duration is None else min(len(files), first + int(round(duration * rate)))
    files = files[first:last]
    if not files:
        raise UserError(f"{spec}: no frames after --start {start}")
    with imageio.load(files[0]) as im:
        size = im.size
    return Source(spec, "frames", rate, len(files), size, files=files, start=start,
                  duration=duration, src_fps=rate)


# ----------------------------------------------------------------------------- output
def output_kind(path) -> str:
    """'movie', 'gif' or 'folder' for an output path; UserError when it cannot be written."""
    if str(path) == "":
        raise UserError("-o: the output name is empty; give a video file (.mp4, .gif, ...) or a "
                        "new folder name")
    p = Path(path)
    ext = p.suffix.lower()
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"{p}: folder {parent} does not exist (create it first)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{p}: cannot write to folder {parent} (permission denied)")
    if ext in MOVIE_OUT:
        kind = "movie"
    elif ext == ".gif":
        kind = "gif"
    elif ext == "" or p.is_dir():
        kind = "folder"
        if p.is_dir() and any(p.iterdir()):
            raise UserError(f"{p}: folder exists and is not empty (give a new folder name, or "
                            "an .mp4 or .gif file)")
    else:
        raise UserError(f"{p}: cannot write video as '{ext}': use .mp4, .mov, .mkv, .gif, or a "
                        "folder name (no extension) for PNG frames")
    if kind != "folder" and p.is_dir():
        raise UserError(f"{p}: is a folder")
    return kind


def even_size(height: int, width: int) -> tuple[int, int]:
    """H.264 in yuv420p needs even sides: round each down to an even number."""
    return max(2, height - height % 2), max(2, width - width % 2)


def write(frames, path, fps: float, audio_from: Optional[Source] = None, count=None) -> str:
    """Write ``frames`` (an iterable of PIL images or tensors, all one size) to ``path`` (movie,
    gif or folder) atomically. Returns a note about the audio ('' when nothing to say)."""
    kind = output_kind(path)
    path = Path(path)
    if kind == "folder":
        return _write_folder(frames, path)
    if kind == "gif":
        return _write_gif(frames, path, fps)
    return _write_movie(frames, path, fps, audio_from)


def _pil(frame):
    return frame if isinstance(frame, Image.Image) else imageio.to_pil(frame)


def _write_folder(frames, path: Path) -> str:
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    try:
        for i, frame in enumerate(frames, start=1):
            _pil(frame).save(tmp / f"{i:06d}.png")
        os.chmod(tmp, 0o777 & ~imageio._UMASK)
        if path.is_dir():
            path.rmdir()          # checked empty before the run
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ""


def _write_gif(frames, path: Path, fps: float) -> str:
    frames = [_pil(f) for f in frames]
    if not frames:
        raise UserError(f"{path}: no frames to write")
    # One palette for the whole clip, from a strip of up to 8 frames spread over it; no
    # dithering, so a pixel that does not change is drawn the same in every frame.
    pick = frames[:: max(1, len(frames) // 8)][:8]
    w, h = pick[0].size
    strip = Image.new("RGB", (w, h * len(pick)))
    for i, f in enumerate(pick):
        strip.paste(f, (0, i * h))
    palette = strip.quantize(256, method=Image.Quantize.MEDIANCUT)
    quantised = [f.quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    ms = max(20, int(round(1000 / fps)))
    imageio.atomic_write(path, lambda fh: quantised[0].save(
        fh, format="GIF", save_all=True, append_images=quantised[1:], duration=ms, loop=0,
        optimize=False, disposal=1))
    return ""


def _write_movie(frames, path: Path, fps: float, audio_from: Optional[Source]) -> str:
    av = _av()
    fmt = MOVIE_OUT[path.suffix.lower()]
    note = ""
    with imageio.atomic_path(path) as tmp:
        rate = Fraction(fps).limit_denominator(1001)
        with av.open(tmp, "w", format=fmt) as out:
            stream = out.add_stream("libx264", rate=rate)
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "18", "preset": "medium"}
            audio_in = audio_out = container_in = None
            if audio_from is not None and audio_from.has_audio and audio_from.kind == "video":
                container_in = av.open(audio_from.path)
                audio_in = container_in.streams.audio[0]
                try:
                    audio_out = out.add_stream_from_template(audio_in)
                except (av.FFmpegError, ValueError) as e:
                    note = f"audio not copied ({_msg(e)})"
                    audio_out = None
            n = 0
            for frame in frames:
                im = _pil(frame)
                h, w = even_size(im.height, im.width)
                if (w, h) != im.size:
                    im = im.crop((0, 0, w, h))
                if n == 0:
                    stream.width, stream.height = w, h
                vf = av.VideoFrame.from_image(im)
                vf.pts = n
                vf.time_base = 1 / rate
                for packet in stream.encode(vf):
                    out.mux(packet)
                n += 1
            for packet in stream.encode():
                out.mux(packet)
            if audio_out is not None:
                note = _copy_audio(out, container_in, audio_in, audio_out, audio_from, n / fps)
            if container_in is not None:
                container_in.close()
        if n == 0:
            raise UserError(f"{path}: no frames to write")
    return note


def _copy_audio(out, container_in, audio_in, audio_out, source: Source, length: float) -> str:
    """Remux the audio packets between --start and the end of the video (no re-encoding)."""
    av = _av()
    tb = audio_in.time_base
    start = source.start
    first_pts = None
    try:
        for packet in container_in.demux(audio_in):
            if packet.pts is None or packet.dts is None:
                continue
            t = float(packet.pts * tb)
            if t < start - 1e-6:
                continue
            if t - start >= length:
                break
            if first_pts is None:
                first_pts = packet.pts
            packet.pts -= first_pts
            packet.dts -= first_pts
            packet.stream = audio_out
            out.mux(packet)
    except av.FFmpegError as e:
        return f"audio not copied ({_msg(e)})"
    return "audio copied"
