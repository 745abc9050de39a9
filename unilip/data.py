"""Image inputs: how files become 8-bit RGB, how datasets are listed, and the evaluation transform.

Input contract (every image the reconstruction benchmark, ``unilip reconstruct`` and training read):

* **Read**: files named ``.jpg .jpeg .png .webp .bmp``, in any letter case (``.JPEG`` is JPEG). The
  format is taken from the bytes, not the name.
* **8-bit**: RGB as stored; greyscale (``L``) replicated to R = G = B; 1-bit to 0/255; 1/2/4-bit grey
  PNG scaled to 0..255; palette (``P``) through its palette. CMYK JPEG: Pillow's conversion, without
  colour management. ICC profiles and PNG gamma are not applied (pixel values as stored), as in the
  official evaluator.
* **16-bit** (PNG grey, grey + alpha, RGB, RGBA): every sample ``v`` becomes ``round(v * 255 / 65535)``,
  exactly. (Pillow alone clips 16-bit grey to white when converting and keeps only the high byte of
  16-bit colour, up to one level low; this module reads the full samples instead.)
* **Transparency** (alpha channel, a palette's or PNG's ``tRNS`` transparent colour): composited over
  a white background (``ALPHA_BACKGROUND`` = 255): ``round(c * a + 255 * (1 - a))``; a fully
  transparent pixel reads as white whatever colour it hides.
* **EXIF orientation** is applied (``PIL.ImageOps.exif_transpose``), so an image reads the way it
  displays. The official UniLIP evaluator ignores it (it reads with ``PIL.Image.open(...).convert
  ("RGB")``); for reconstruction this only turns the input, since the real and the reconstructed
  image both come from the same decoded image.
* **Refused** (``ImageReadError``, which the recon benchmark turns into a failed item with the reason,
  and the run goes on): bytes that do not decode (corrupt, truncated, not an image); pixel modes with
  no faithful 8-bit mapping (32-bit float ``F``, 32-bit integer ``I`` with values outside 0..65535,
  and any other mode not listed above), rather than clipped; images larger than Pillow's
  decompression-bomb limit (over ``2 * PIL.Image.MAX_IMAGE_PIXELS`` pixels, about 179 million by
  default; raise ``PIL.Image.MAX_IMAGE_PIXELS`` to read them); a file deleted, or a tar shard changed,
  after the dataset was listed.
* **Skipped when listing**, each reported with its reason (``SourceListing.skipped``): files with
  another image extension Pillow knows (``.tif``, ``.gif``, ``.ppm``, ``.avif``, ``.jfif`` ...: TIFF can
  hold float, 16-bit colour and several pages, GIF several frames, which this reader does not decode
  exactly; convert them to PNG to include them), broken symbolic links, symbolic links to directories
  (not followed), tar shards that cannot be read or parsed to the end, and tar members shadowed by a
  later one of the same name. Files with non-image names (``.json``, ``.cls``, ``.txt`` sidecars) are
  not images and are not listed. Animated PNG/WebP: the first frame, as Pillow opens it.

Ids are relative paths (``shard.tar/member`` for tar shards). A file name that is not valid UTF-8
keeps its undecodable bytes as lone surrogates (Python's ``surrogateescape``), so encode an id with
``os.fsencode`` (or ``errors="surrogateescape"``) and show it with :func:`printable`.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps

# RGB photographs that ship inside scikit-image (no download): public domain or CC licensed.
BUILTIN_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")

# The extensions read, matched case-insensitively.
IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".webp")

# The background transparent pixels are composited over (8-bit grey level).
ALPHA_BACKGROUND = 255

# The enlargement by ``eval_transform`` above which an input is too small to score like a photo.
MAX_UPSCALE = 2.0

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageReadError(ValueError):
    """An image that cannot be read faithfully; the message names it and says why."""


class LoadedImage(NamedTuple):
    """An image as read (8-bit RGB) and the raw bytes it was decoded from.

    ``raw`` is exactly the file's (or tar member's) bytes; for a built-in photo, its RGB pixels
    (``H x W x 3`` uint8, row-major), which are constant for a given scikit-image release.
    """

    image: Image.Image
    raw: bytes

    @property
    def sha256(self) -> str:
        """The sha256 (hex) of ``raw`` (computed on each access)."""
        return hashlib.sha256(self.raw).hexdigest()


def printable(text: str) -> str:
    """``text`` safe to print or encode as UTF-8: the bytes of a file name that is not valid UTF-8
    (which Python keeps as lone surrogates) are shown as ``\\xNN``."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # surrogates that no file name produced (e.g. from JSON): show them escaped
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


# ----------------------------------------------------------------------------------- decoding
def read_image(path: str | Path) -> Image.Image:
    """Read an image file as 8-bit RGB per the input contract, or raise ``ImageReadError`` saying why."""
    path = str(path)
    return decode_image(_read_file(path, "no such file"), path)


def decode_image(raw: bytes, where: str = "image") -> Image.Image:
    """Decode an image file's bytes to 8-bit RGB per the input contract (see the module docstring).

    Raises ``ImageReadError`` naming ``where`` (a path, or ``shard:member``) and the reason.
    """
    try:
        return _decode(raw)
    except ImageReadError as error:
        raise ImageReadError(f"{printable(where)}: {error}") from None
    except Image.DecompressionBombError as error:
        # Not an OSError, so it needs its own clause; Pillow's message names the pixel count and the limit.
        raise ImageReadError(
            f"{printable(where)}: refused as a possible decompression bomb: {error} "
            f"(the limit is 2 x PIL.Image.MAX_IMAGE_PIXELS; raise PIL.Image.MAX_IMAGE_PIXELS "
            f"to read it)"
        ) from None
    except Exception as error:
        # Pillow's plugins raise many types on malformed data (OSError, SyntaxError, ValueError, struct.error,
        # EOFError, IndexError, MemoryError ...): any of them makes this one item unreadable, never the run.
        raise ImageReadError(
            f"{printable(where)}: not a readable image ({type(error).__name__}: {printable(str(error))})"
        ) from None


def to_rgb(image: Image.Image) -> Image.Image:
    """An in-memory image as 8-bit RGB per the input contract, or ``ImageReadError`` for a refused mode.

    The image's pixels are taken as Pillow holds them (no EXIF step). Files go through
    :func:`read_image` / :func:`decode_image`, which also apply the orientation and read 16-bit colour
    PNGs exactly (Pillow holds only their high bytes).
    """
    return _to_rgb(image, key_scale=1)


def _decode(raw: bytes) -> Image.Image:
    header = _png_header(raw)
    if header is not None and header[0] == 16 and header[1] in (2, 4, 6):
        return _png16_colour(raw, header[1])
    # Pillow keeps the tRNS grey level of a 2- or 4-bit PNG at its bit depth while scaling the pixels
    # to 0..255; the level must be scaled the same way to match the pixels it names.
    key_scale = 255 // (2 ** header[0] - 1) if header is not None and header[1] == 0 and header[0] in (2, 4) else 1
    return _to_rgb(_open(raw), key_scale)


def _png_header(raw: bytes) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR, or None when ``raw`` is not a PNG."""
    if len(raw) >= 26 and raw[:8] == _PNG_SIGNATURE and raw[12:16] == b"IHDR":
        return raw[24], raw[25]
    return None


def _open(raw: bytes, rawmode: str | None = None) -> Image.Image:
    """Decode ``raw`` with Pillow and apply its EXIF orientation (optionally unpacking with ``rawmode``)."""
    # Not closed: the bytes are in memory (no file handle), and closing would discard the loaded pixels.
    image = Image.open(io.BytesIO(raw))
    if rawmode is not None:
        # The PNG decoder undoes the row filters on bytes, by bytes per pixel; the raw mode only picks
        # which of those bytes land in the image. Must be set before anything loads the pixels.
        image.tile = [
            tile._replace(args=rawmode) if hasattr(tile, "_replace") else (*tile[:3], rawmode) for tile in image.tile
        ]
    ImageOps.exif_transpose(image, in_place=True)
    return image


def _png16_colour(raw: bytes, colour_type: int) -> Image.Image:
    """A 16-bit grey + alpha (4), RGB (2) or RGBA (6) PNG, from its full 16-bit samples."""
    expected = {2: "RGB", 4: "RGBA", 6: "RGBA"}[colour_type]
    with Image.open(io.BytesIO(raw)) as header:  # reads the chunks before the pixels only
        mode, key = header.mode, header.info.get("transparency")
    if mode != expected:
        raise ImageReadError(
            f"16-bit PNG (colour type {colour_type}) opened by Pillow as mode {mode}, not "
            f"{expected}: this reader cannot recover its 16-bit samples"
        )
    if colour_type == 4:
        # 4 bytes a pixel, like 8-bit RGBA: unpacked as RGBA they are grey high, grey low, alpha high, alpha low.
        pairs = np.asarray(_open(raw, "RGBA")).astype(np.uint16)
        grey = pairs[..., 0] << 8 | pairs[..., 1]
        return _composite(grey[..., None], pairs[..., 2] << 8 | pairs[..., 3], 65535)
    # Pillow's own decode keeps the high byte of each sample; unpacked as little-endian instead, each
    # big-endian sample gives its low byte.
    high = np.asarray(_open(raw)).astype(np.uint16)
    samples = high << 8 | np.asarray(_open(raw, f"{expected};16L")).astype(np.uint16)
    if colour_type == 6:
        return _composite(samples[..., :3], samples[..., 3], 65535)
    return _composite(samples, _key_alpha(samples, key, 65535), 65535)


def _to_rgb(image: Image.Image, key_scale: int) -> Image.Image:
    mode, key = image.mode, image.info.get("transparency")
    if mode in ("P", "PA"):
        if key is None and mode == "P" and image.palette is not None and image.palette.mode != "RGBA":
            return image.convert("RGB")
        rgba = np.asarray(image.convert("RGBA"))
        return _composite(rgba[..., :3], rgba[..., 3], 255)
    if mode == "CMYK":
        return image.convert("RGB")
    if mode in ("1", "L", "RGB"):
        if key is None:
            return image.convert("RGB")  # grey replicated; 1-bit as 0/255
        samples = np.asarray(image.convert("L") if mode == "1" else image)
        samples = samples[..., None] if samples.ndim == 2 else samples
        key = tuple(k * key_scale for k in key) if isinstance(key, tuple) else key * key_scale
        return _composite(samples, _key_alpha(samples, key, 255), 255)
    if mode in ("LA", "RGBA"):
        samples = np.asarray(image)
        return _composite(samples[..., :-1], samples[..., -1], 255)
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        samples = np.asarray(image)[..., None]
        if mode == "I" and (samples.min() < 0 or samples.max() > 65535):
            raise ImageReadError(
                f"32-bit integer pixels from {samples.min()} to {samples.max()}: outside the "
                f"16-bit range 0..65535, so there is no faithful 8-bit mapping (refused, not clipped)"
            )
        return _composite(samples, _key_alpha(samples, key, 65535), 65535)
    if mode == "F":
        raise ImageReadError("32-bit float pixels (mode F): no defined range to map onto 8 bits (refused, not clipped)")
    raise ImageReadError(f"pixel mode {mode}: no faithful 8-bit RGB mapping in this reader (refused, not converted)")


def _key_alpha(samples: np.ndarray, key: Any, max_value: int) -> np.ndarray | None:
    """Alpha for a tRNS transparent colour: 0 where every channel equals ``key``, opaque elsewhere."""
    if key is None:
        return None
    key = np.asarray(key if isinstance(key, tuple) else (key,), dtype=np.int64)
    return np.where((samples == key).all(axis=-1), 0, max_value)


def _composite(colour: np.ndarray, alpha: np.ndarray | None, max_value: int) -> Image.Image:
    """``H x W x C`` samples (C = 1 grey or 3 RGB) on ``0..max_value``, over ``ALPHA_BACKGROUND``, as RGB.

    Each channel becomes ``round(255 * c / M * a / M + B * (1 - a / M))`` (M = ``max_value``, B the
    background, ``a = M`` without alpha), in exact integer arithmetic. With B = 255 and M = 255 or
    65535 the value is never exactly halfway between two levels, so no tie-breaking rule is involved.
    """
    m = max_value
    c = colour.astype(np.int64)
    a = np.full(c.shape[:2], m, np.int64) if alpha is None else np.asarray(alpha, dtype=np.int64)
    a = a[..., None]
    numerator = 255 * c * a + ALPHA_BACKGROUND * m * (m - a)
    out = ((2 * numerator + m * m) // (2 * m * m)).astype(np.uint8)
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    return Image.fromarray(np.ascontiguousarray(out), "RGB")


def _read_file(path: str, missing: str) -> bytes:
    """A regular file's bytes, or ``ImageReadError`` (``missing`` says why a vanished file may be gone)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ImageReadError(f"{printable(path)}: not a regular file")
        with open(path, "rb") as file:
            return file.read()
    except FileNotFoundError:
        raise ImageReadError(f"{printable(path)}: {missing}") from None
    except OSError as error:
        raise ImageReadError(f"{printable(path)}: cannot be read ({error.strerror or error})") from None


def builtin_photos(names: tuple[str, ...] = BUILTIN_PHOTOS) -> dict[str, Image.Image]:
    """The real RGB photographs that scikit-image ships, by name."""
    from skimage import data as skdata

    photos = {}
    for name in names:
        if name not in BUILTIN_PHOTOS:
            raise ValueError(f"unknown built-in photo {name!r}; choose from {', '.join(BUILTIN_PHOTOS)}")
        photos[name] = Image.fromarray(getattr(skdata, name)()).convert("RGB")
    return photos


# ----------------------------------------------------------------------------------- evaluation transform
def eval_transform(image: Image.Image, size: int) -> torch.Tensor:
    """Upstream's evaluation preprocessing: shorter side to ``size`` (bicubic, antialias), centre crop.

    Returns a ``3 x size x size`` float tensor in [0, 1].
    """
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    resized = TF.resize(image, size, interpolation=InterpolationMode.BICUBIC, antialias=True)
    return TF.to_tensor(TF.center_crop(resized, size))


def upscale_factor(width: int, height: int, size: int) -> float:
    """How much :func:`eval_transform` enlarges a ``width x height`` image: ``size / min(width, height)``.

    The shorter side is resized to ``size`` and the centre crop never enlarges. Above 1 the input is
    upsampled: bicubic interpolation invents no detail, so such an image is easy to reconstruct and its
    scores do not measure what a full-size photo's do; above ``MAX_UPSCALE`` it should be counted apart.
    """
    if min(width, height, size) < 1:
        raise ValueError(f"upscale_factor needs positive sizes, got {width} x {height} to {size}")
    return size / min(width, height)


# ----------------------------------------------------------------------------------- image sources
# A source is a tuple: ("builtin", name), ("digits", split, index), ("file", absolute path) or
# ("tar", absolute shard path, member name).


@dataclass(frozen=True)
class ImageEntry:
    """One image of a listing: its id, its source tuple and its size in bytes (0 for a built-in photo)."""

    id: str
    source: tuple[str, ...]
    size: int


@dataclass(frozen=True)
class SkippedFile:
    """A file a listing leaves out on purpose (id as an entry's would be, or a shard's name) and why."""

    id: str
    reason: str


@dataclass(frozen=True)
class SourceListing:
    """The images of a dataset in a stable order, and the files left out, each with its reason."""

    entries: list[ImageEntry]
    skipped: list[SkippedFile]


def source_file(source: tuple[str, ...]) -> str | None:
    """The absolute path of the file on disk that holds a source's bytes: the image itself, or the tar
    shard its member is in (the member name is ``source[2]``); None for a built-in photo or digit
    (constant)."""
    return None if source[0] in ("builtin", "digits") else source[1]


def tar_shards(root: Path) -> list[Path]:
    """A .tar file itself, or the sorted .tar files of a folder (webdataset-style shards)."""
    if root.is_file() and root.suffix == ".tar":
        return [root]
    return sorted(root.glob("*.tar")) if root.is_dir() else []


def list_image_sources(kind: str, path: str | Path | None) -> SourceListing:
    """Every image of a ``folder`` (recursive), ``tar`` shard set or ``builtin``, and the files skipped.

    Ids are stable and sorted (by path components): relative paths for folders, ``shard.tar/member``
    for tar shards. Sources hold absolute paths. What is read and what is skipped: the module docstring.
    """
    if kind == "builtin":
        return SourceListing([ImageEntry(name, ("builtin", name), 0) for name in BUILTIN_PHOTOS], [])
    if kind == "digits":
        from unilip.training.digits import digit_labels

        return SourceListing(
            [
                ImageEntry(f"{label}/{index:04d}.png", ("digits", "test", index), 0)
                for index, label in enumerate(digit_labels("test"))
            ],
            [],
        )
    if not path:
        raise ValueError(f"image source kind {kind!r} needs a path")
    root = Path(path).absolute()
    if not root.exists():
        raise FileNotFoundError(f"image source path {printable(str(root))} does not exist")
    if kind == "tar":
        shards = tar_shards(root)
        if not shards:
            raise ValueError(f"{printable(str(root))}: no .tar shards found")
        listing = SourceListing([], [])
        for shard in shards:
            _list_shard(shard, listing)
        return listing
    if kind != "folder":
        raise ValueError(f"unknown image source kind {kind!r}; choose folder, tar or builtin")
    return _list_folder(root)


def _skip_reason(name: str) -> str | None:
    """Why a file with this name is skipped: None when it is read or is not an image by name."""
    extension = os.path.splitext(name)[1].lower()
    if extension in IMAGE_EXTENSIONS:
        return None
    image_format = Image.registered_extensions().get(extension)
    if image_format is None:
        return None
    return f"{extension} ({image_format}) is not an extension this reader takes ({' '.join(IMAGE_EXTENSIONS)})"


def _is_read(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _list_folder(root: Path) -> SourceListing:
    entries, skipped = [], []
    for path in sorted(root.rglob("*")):
        item_id = path.relative_to(root).as_posix()
        if path.is_symlink() and path.is_dir():
            skipped.append(SkippedFile(item_id, "symbolic link to a directory: not followed"))
            continue
        if not _is_read(path.name):
            reason = None if path.is_dir() else _skip_reason(path.name)
            if reason is not None:
                skipped.append(SkippedFile(item_id, reason))
            continue
        try:
            status = path.stat()
        except FileNotFoundError:
            skipped.append(
                SkippedFile(
                    item_id, "broken symbolic link" if path.is_symlink() else "vanished while the folder was listed"
                )
            )
            continue
        except OSError as error:
            skipped.append(SkippedFile(item_id, f"cannot be read ({error.strerror or error})"))
            continue
        if stat.S_ISDIR(status.st_mode):
            continue
        if not stat.S_ISREG(status.st_mode):
            skipped.append(SkippedFile(item_id, "not a regular file"))
            continue
        entries.append(ImageEntry(item_id, ("file", str(path)), status.st_size))
    return SourceListing(entries, skipped)


def _list_shard(shard: Path, listing: SourceListing) -> None:
    """Add one shard's image members to ``listing`` (members sorted by name), or skip the shard."""
    shard = shard.absolute()
    try:
        with tarfile.open(shard) as archive:
            members = archive.getmembers()
            unparsed = _first_nonzero_byte(archive.fileobj, archive.offset)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        listing.skipped.append(
            SkippedFile(shard.name, f"not a readable tar shard ({type(error).__name__}: {printable(str(error))})")
        )
        return
    if unparsed is not None:
        # tarfile stops quietly at a damaged header after the first: members stored after it would vanish.
        listing.skipped.append(
            SkippedFile(
                shard.name,
                f"data from byte {unparsed:,} on cannot be parsed as tar "
                f"members (a damaged header, or archives concatenated): "
                f"any images stored there are not listed",
            )
        )
    latest: dict[str, tarfile.TarInfo] = {}
    for member in members:
        if member.name in latest and _is_read(member.name):
            listing.skipped.append(
                SkippedFile(f"{shard.name}/{member.name}", "a later member of the same name replaces it")
            )
        latest[member.name] = member
    for name in sorted(latest):
        member, item_id = latest[name], f"{shard.name}/{name}"
        if member.isdir():
            continue
        if not _is_read(name):
            reason = _skip_reason(name)
            if reason is not None:
                listing.skipped.append(SkippedFile(item_id, reason))
        elif not member.isfile():
            listing.skipped.append(SkippedFile(item_id, "a tar link or special member, not a regular file"))
        else:
            listing.entries.append(ImageEntry(item_id, ("tar", str(shard), name), member.size))


def _first_nonzero_byte(stream: Any, offset: int) -> int | None:
    """The offset of the first non-zero byte from ``offset`` to the end of ``stream`` (None: all zero)."""
    stream.seek(offset)
    while chunk := stream.read(1 << 20):
        stripped = chunk.lstrip(b"\0")
        if stripped:
            return offset + len(chunk) - len(stripped)
        offset += len(chunk)
    return None


class ImageLoader:
    """Reads image sources as :class:`LoadedImage` (8-bit RGB image, raw bytes); keeps tar shards open."""

    def __init__(self) -> None:
        self._tars: dict[str, tarfile.TarFile] = {}
        self._builtin: dict[str, Image.Image] | None = None
        self._digits: np.ndarray | None = None

    def load(self, source: tuple[Any, ...]) -> LoadedImage:
        """Read one source, decoding the bytes read (each file is read once), or raise ``ImageReadError``."""
        kind = source[0]
        if kind == "builtin":
            if self._builtin is None:
                self._builtin = builtin_photos()
            image = self._builtin[source[1]]
            return LoadedImage(image, image.tobytes())
        if kind == "digits":
            if self._digits is None:
                from unilip.training.digits import digit_images_uint8

                self._digits = digit_images_uint8(source[1])
            image = Image.fromarray(self._digits[source[2]])
            return LoadedImage(image, image.tobytes())
        if kind == "file":
            raw = _read_file(source[1], "no such file (deleted after the dataset was listed?)")
            return LoadedImage(decode_image(raw, source[1]), raw)
        if kind == "tar":
            raw = self._member_bytes(source[1], source[2])
            return LoadedImage(decode_image(raw, f"{source[1]}:{source[2]}"), raw)
        raise ValueError(f"unknown image source {source!r}")

    def _member_bytes(self, shard: str, member: str) -> bytes:
        where = f"{printable(shard)}:{printable(member)}"
        try:
            archive = self._tars.get(shard)
            if archive is None:
                archive = self._tars[shard] = tarfile.open(shard)
            handle = archive.extractfile(member)
            if handle is None:
                raise ImageReadError(f"{where}: not a regular file in the shard")
            return handle.read()
        except FileNotFoundError:
            raise ImageReadError(f"{where}: no such shard (deleted after the dataset was listed?)") from None
        except KeyError:
            raise ImageReadError(
                f"{where}: no such member in the shard (the shard changed after the dataset was listed?)"
            ) from None
        except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
            raise ImageReadError(
                f"{where}: corrupt or truncated tar shard ({type(error).__name__}: {printable(str(error))})"
            ) from None

    def __enter__(self) -> ImageLoader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the tar shards opened so far (the loader can still be used: it reopens them)."""
        for archive in self._tars.values():
            archive.close()
        self._tars.clear()
