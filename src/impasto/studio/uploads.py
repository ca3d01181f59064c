"""Images a client sends, and the bundled examples: the only images the studio reads.

An upload is checked in memory before anything is written: its size (the caller stops
reading at ``max_bytes``), its declared type, its pixel count from the header (before any pixel
is decoded, ``image.probe``), and a real decode (``image.load``), never its file name. Only then
is it written to the data folder, under a name the server makes (``secrets``); a client's
file name is kept as a label and never becomes a path. Identical bytes are stored once.

Sources are named by id: an upload's id, or ``example:NAME`` for a bundled example. A run
refers to images only by these ids; ``resolve`` turns an id into a path by lookup in the
server's own tables, so no client-supplied text is ever opened as a path.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import secrets
import threading
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import config as config_mod, image as imageio
from ..errors import UserError

MAX_UPLOAD_BYTES = 32 * 2**20
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp",
              "TIFF": ".tif"}
ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
EXAMPLE_PREFIX = "example:"
VIEW_SIDE = 1024          # the long side of the copy the page shows


class UploadError(UserError):
    """A refused upload, with the HTTP status that says why (413, 415 or 400)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Source:
    id: str
    name: str           # a label for people (a client's file name, cleaned); never a path
    width: int
    height: int
    format: str
    kind: str           # "upload" or "example"

    def public(self) -> dict:
        d = asdict(self)
        base = "/api/examples/" + self.id[len(EXAMPLE_PREFIX):] if self.kind == "example" \
            else "/api/uploads/" + self.id
        d["url"] = base
        return d


def clean_label(name, fallback: str) -> str:
    """A client's file name as a short printable label: no folders, no control characters."""
    if not isinstance(name, str):
        return fallback
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip()
    return name[:80] or fallback


def accepted_type(content_type: str | None) -> bool:
    """image/* or application/octet-stream (the type says what the client means; the bytes
    are checked for real either way)."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    return kind.startswith("image/") or kind == "application/octet-stream"


def check_image(data: bytes, label: str, max_pixels: int) -> tuple[int, int, str]:
    """(width, height, Pillow format) of image bytes: the pixel count from the header first,
    then a full decode; UploadError (413 above the pixel limit, else 400) otherwise."""
    from PIL import Image as PILImage
    if not data:
        raise UploadError(f"{label}: the file is empty")
    try:
        w, h = imageio.probe(data, label, max_pixels=None)
    except UserError as e:
        raise UploadError(str(e), 400) from None
    if max_pixels is not None and w * h > max_pixels:
        try:     # the image module's own words for the limit
            imageio.probe(data, label, max_pixels=max_pixels)
        except UserError as e:
            raise UploadError(str(e), 413) from None
    with PILImage.open(io.BytesIO(data)) as im:       # the header only: probed above
        fmt = im.format or "image"
    try:
        imageio.load(data, long_side=64, max_pixels=max_pixels, what=label)   # every byte
    except UserError as e:
        raise UploadError(str(e), 400) from None
    return w, h, fmt


class Uploads:
    """The uploads folder: checked images under server-made names, and their labels."""

    def __init__(self, folder: Path, max_bytes: int = MAX_UPLOAD_BYTES,
                 max_pixels: int = config_mod.MAX_INPUT_PIXELS):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.max_pixels = max_bytes, max_pixels
        self.lock = threading.Lock()
        self.items: dict[str, Source] = {}
        self.paths: dict[str, Path] = {}
        self.digests: dict[str, str] = {}
        self._load_index()

    # the index keeps labels and digests; files without an entry are still found by name
    def _index_path(self) -> Path:
        return self.folder / "index.json"

    def _load_index(self):
        try:
            index = json.loads(self._index_path().read_text())
        except (OSError, ValueError):
            index = {}
        index = index if isinstance(index, dict) else {}
        for p in sorted(self.folder.iterdir()):
            uid = p.stem
            if not (p.is_file() and not p.is_symlink() and ID.match(uid)
                    and p.suffix in EXTENSIONS.values()):
                continue
            entry = index.get(uid) if isinstance(index.get(uid), dict) else {}
            try:
                w, h = imageio.probe(p, "upload", max_pixels=None)
            except UserError:
                continue
            fmt = next((k for k, v in EXTENSIONS.items() if v == p.suffix), "image")
            self.items[uid] = Source(uid, clean_label(entry.get("name"), f"upload {uid[:6]}"),
                                     w, h, fmt, "upload")
            self.paths[uid] = p
            if isinstance(entry.get("sha256"), str):
                self.digests[entry["sha256"]] = uid

    def _save_index(self):
        inv = {uid: d for d, uid in self.digests.items()}
        index = {uid: {"name": im.name, "sha256": inv.get(uid)} for uid, im in self.items.items()}
        text = json.dumps(index, indent=1)
        imageio.atomic_write(self._index_path(), lambda fh: fh.write(text.encode()))

    def add(self, data: bytes, content_type: str | None, name=None) -> Source:
        """Check ``data`` and store it; the stored Image. Nothing is written unless it is a
        good image within the limits."""
        label = clean_label(name, "upload")
        if not accepted_type(content_type):
            raise UploadError(f"{label}: the upload's type is "
                              f"'{(content_type or 'none')[:60]}'; send an image (image/png, "
                              "image/jpeg, ...) or application/octet-stream", 415)
        if len(data) > self.max_bytes:
            raise UploadError(too_large(self.max_bytes), 413)
        w, h, fmt = check_image(data, label, self.max_pixels)
        digest = hashlib.sha256(data).hexdigest()
        with self.lock:
            uid = self.digests.get(digest)
            if uid in self.items:
                return self.items[uid]
            uid = secrets.token_urlsafe(18)
            path = self.folder / f"{uid}{EXTENSIONS.get(fmt, '.img')}"
            imageio.atomic_write(path, lambda fh: fh.write(data))
            self.items[uid] = Source(uid, label if name else f"upload {uid[:6]}", w, h, fmt,
                                     "upload")
            self.paths[uid] = path
            self.digests[digest] = uid
            self._save_index()
            return self.items[uid]

    def get(self, uid: str) -> Source | None:
        return self.items.get(uid) if isinstance(uid, str) else None

    def path(self, uid: str) -> Path | None:
        return self.paths.get(uid) if isinstance(uid, str) else None

    def id_of(self, path) -> str | None:
        """The id of the upload stored at ``path`` (a run record's input), or None."""
        p = Path(path)
        if p.parent.resolve() != self.folder.resolve():
            return None
        return p.stem if self.paths.get(p.stem) is not None and \
            self.paths[p.stem].name == p.name else None


def too_large(limit: int) -> str:
    size = f"{limit / 2**20:.0f} MB" if limit >= 2**20 else f"{limit // 1024} KB"
    return (f"the upload is larger than the studio's limit of {size}; send a smaller file "
            "(impasto serve --max-upload-mb raises the limit)")


class Examples:
    """The bundled example images (read-only), by name."""

    def __init__(self, folder: Path | None):
        self.items: dict[str, Source] = {}
        self.paths: dict[str, Path] = {}
        if folder is None or not Path(folder).is_dir():
            return
        for p in sorted(Path(folder).iterdir()):
            if not p.is_file() or p.suffix.lower() not in (".jpg", ".jpeg", ".png") \
                    or p.stem.endswith("_mask"):
                continue
            try:
                w, h = imageio.probe(p, "example")
            except UserError:
                continue
            eid = EXAMPLE_PREFIX + p.name
            self.items[eid] = Source(eid, p.stem.replace("_", " "), w, h, p.suffix[1:].upper(),
                                     "example")
            self.paths[eid] = p.resolve()

    def get_by_name(self, name: str) -> Source | None:
        return self.items.get(EXAMPLE_PREFIX + name) if isinstance(name, str) else None

    def id_of(self, path) -> str | None:
        p = Path(path).resolve()
        return next((eid for eid, q in self.paths.items() if q == p), None)


def default_examples() -> Path | None:
    """The repository's examples/ folder (a source checkout), if there is one."""
    here = Path(__file__).resolve()
    for parent in here.parents[:5]:
        if (parent / "examples" / "tubingen.jpg").is_file():
            return parent / "examples"
    return None


class Sources:
    """Uploads and examples together: id -> path for a run, path -> id for a record."""

    def __init__(self, uploads: Uploads, examples: Examples):
        self.uploads, self.examples = uploads, examples

    def get(self, ref) -> Source | None:
        if not isinstance(ref, str):
            return None
        return self.examples.items.get(ref) or self.uploads.get(ref)

    def resolve(self, ref, role: str) -> Path:
        """The path of the image ``ref`` names (an upload id or example:NAME); UserError for
        anything else. Never opens or builds a path from ``ref``."""
        if isinstance(ref, str):
            path = self.examples.paths.get(ref) or self.uploads.path(ref)
            if path is not None:
                return path
        raise UserError(f"{role}: no image {config_mod._show(ref, 40)} here (upload it with "
                        "POST /api/uploads and give its id, or an example id from "
                        "GET /api/examples)")

    def id_of(self, path) -> str | None:
        if not path:
            return None
        return self.uploads.id_of(path) or self.examples.id_of(path)

    def describe(self, path) -> dict | None:
        """{id, name, url} of a record's input path (id None if it is not here any more)."""
        if not path:
            return None
        ref = self.id_of(path)
        im = self.get(ref) if ref else None
        if im is None:
            return {"id": None, "name": Path(path).name, "url": None}
        return {"id": im.id, "name": im.name, "url": im.public()["url"]}


def view_jpeg(path: Path, max_pixels: int) -> bytes:
    """A JPEG of the image at ``path`` at most VIEW_SIDE on its long side, as the engine sees
    it (EXIF orientation applied, transparency on white)."""
    im = imageio.load(path, long_side=VIEW_SIDE, max_pixels=max_pixels, what="image")
    im.thumbnail((VIEW_SIDE, VIEW_SIDE))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()
