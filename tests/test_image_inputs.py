"""The input contract of ``unilip.data``: images decoded right (16-bit, alpha, EXIF), or refused with a reason;
listings that report what they skip; loaders that turn every bad file into an ``ImageReadError``."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unilip.data import ImageLoader, ImageReadError, read_image

# ----------------------------------------------------------------------------------- a PNG writer
# Pillow cannot write 16-bit colour PNGs (or low-bit grey with a transparent level), so the tests build
# them from the specification: every row filter type, optionally Adam7-interlaced.

_ADAM7 = ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _filter_rows(rows: np.ndarray, bpp: int) -> bytes:
    """PNG-filter byte rows (``H x N`` uint8), cycling through the five filter types."""
    rows = rows.astype(np.int16)
    out = []
    for y, row in enumerate(rows):
        up = rows[y - 1] if y else np.zeros_like(row)
        left = np.concatenate([np.zeros(bpp, np.int16), row[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int16), up[:-bpp]])
        kind = y % 5
        if kind == 0:
            predictor = np.zeros_like(row)
        elif kind == 1:
            predictor = left
        elif kind == 2:
            predictor = up
        elif kind == 3:
            predictor = (left + up) // 2
        else:
            p = left + up - upleft
            pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
            predictor = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
        out.append(bytes([kind]) + ((row - predictor) % 256).astype(np.uint8).tobytes())
    return b"".join(out)


def png_bytes(
    samples: np.ndarray, bit_depth: int, colour_type: int, interlace: bool = False, trns: bytes | None = None
) -> bytes:
    """A PNG of ``samples`` (``H x W x C``; 16-bit values for bit depth 16, levels for 2 and 4)."""
    height, width, channels = samples.shape
    if bit_depth == 16:
        packed = samples.astype(">u2").reshape(height, width * channels).view(np.uint8)
        bpp = 2 * channels
    elif bit_depth == 8:
        packed, bpp = samples.astype(np.uint8).reshape(height, width * channels), channels
    else:  # 1, 2 or 4-bit grey: pixels packed into bytes, high bits first
        per_byte = 8 // bit_depth
        padded = np.zeros((height, -(-width // per_byte) * per_byte), np.uint8)
        padded[:, :width] = samples[..., 0]
        groups = padded.reshape(height, -1, per_byte).astype(np.uint16)
        shifts = np.arange(per_byte - 1, -1, -1) * bit_depth
        packed, bpp = (groups << shifts).sum(-1).astype(np.uint8), 1

    def rows_of(image: np.ndarray) -> bytes:
        if bit_depth == 16:
            return _filter_rows(image.astype(">u2").reshape(image.shape[0], -1).view(np.uint8), bpp)
        return _filter_rows(image.reshape(image.shape[0], -1).astype(np.uint8), bpp)

    if not interlace:
        data = _filter_rows(packed, bpp)
    else:
        assert bit_depth in (8, 16), "the test writer interlaces whole-byte samples only"
        data = b"".join(rows_of(samples[sy::dy, sx::dx]) for sy, sx, dy, dx in _ADAM7 if samples[sy::dy, sx::dx].size)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, int(interlace))
    extra = _chunk(b"tRNS", trns) if trns is not None else b""
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + extra
        + _chunk(b"IDAT", zlib.compress(data))
        + _chunk(b"IEND", b"")
    )


def to8(values: np.ndarray) -> np.ndarray:
    """The contract's 16-bit to 8-bit mapping, round(v * 255 / 65535), computed in floats."""
    return np.rint(values.astype(np.float64) * 255 / 65535).astype(np.uint8)


def decoded(tmp_path: Path, data: bytes, name: str = "image.png") -> np.ndarray:
    path = tmp_path / name
    path.write_bytes(data)
    image = read_image(path)
    assert image.mode == "RGB"
    return np.asarray(image)


# ----------------------------------------------------------------------------------- 16-bit
def test_16bit_grey_png_maps_every_value_by_rounding(tmp_path):
    """Point 1: all 65,536 grey levels of a 16-bit PNG (Pillow: I;16) read as round(v * 255 / 65535)."""
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    Image.fromarray(values).save(tmp_path / "grey16.png")
    with Image.open(tmp_path / "grey16.png") as image:
        assert image.mode == "I;16"
    pixels = np.asarray(read_image(tmp_path / "grey16.png"))
    assert (pixels == to8(values)[..., None]).all()  # and R = G = B


@pytest.mark.parametrize("interlace", [False, True], ids=["plain", "adam7"])
def test_16bit_rgb_png_reads_full_samples_not_high_bytes(tmp_path, interlace):
    """Point 1: Pillow keeps only the high byte of 16-bit colour (0x01FF -> 1); the contract rounds (-> 2)."""
    rng = np.random.default_rng(0)
    samples = rng.integers(0, 65536, (23, 37, 3), dtype=np.uint16)
    samples[0, :4] = [[0, 0x01FF, 0xFFFF], [0x80FF, 0x7F80, 0x0080], [0x8000, 0xFF7F, 1], [0xFEFF, 0xFF00, 257]]
    pixels = decoded(tmp_path, png_bytes(samples, 16, 2, interlace))
    assert (pixels == to8(samples)).all()
    assert pixels[0, 0, 1] == 2 and pixels[0, 3, 1] == 254  # 0x01FF, 0xFF00: the high byte gives 1 and 255


def test_16bit_rgba_and_grey_alpha_pngs_composite_over_white_from_full_samples(tmp_path):
    """Points 1 and 3: 16-bit alpha weighs the 16-bit colour over white, exactly, then rounds once."""
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 65536, (19, 29, 4), dtype=np.uint16)
    rgba[0, 0] = [65535, 0, 0, 0]  # transparent red
    rgba[0, 1] = [0x01FF, 0x01FF, 0x01FF, 65535]  # opaque
    colour, alpha = rgba[..., :3].astype(np.float64) / 65535, rgba[..., 3:].astype(np.float64) / 65535
    expected = np.rint(255 * (colour * alpha + (1 - alpha))).astype(np.uint8)
    pixels = decoded(tmp_path, png_bytes(rgba, 16, 6, interlace=True))
    assert (pixels == expected).all()
    assert pixels[0, 0].tolist() == [255, 255, 255] and pixels[0, 1].tolist() == [2, 2, 2]

    grey_alpha = rgba[..., [0, 3]]
    grey, alpha = grey_alpha[..., :1].astype(np.float64) / 65535, grey_alpha[..., 1:].astype(np.float64) / 65535
    expected = np.rint(255 * (grey * alpha + (1 - alpha))).astype(np.uint8).repeat(3, -1)
    assert (decoded(tmp_path, png_bytes(grey_alpha, 16, 4), "la16.png") == expected).all()


def test_16bit_transparent_colour_keys_match_full_samples(tmp_path):
    """Point 3: a 16-bit tRNS colour is matched on the 16-bit samples (grey and RGB)."""
    grey = np.array([[[0x1234], [0x1235], [65535]]], np.uint16)
    pixels = decoded(tmp_path, png_bytes(grey, 16, 0, trns=struct.pack(">H", 0x1234)), "g.png")
    assert pixels[0, :, 0].tolist() == [255, to8(np.array(0x1235)), 255]
    rgb = np.array([[[0x1234, 0, 9], [0x1234, 0, 10]]], np.uint16)
    pixels = decoded(tmp_path, png_bytes(rgb, 16, 2, trns=struct.pack(">HHH", 0x1234, 0, 10)), "c.png")
    assert pixels[0, 0].tolist() == to8(rgb[0, 0]).tolist() and pixels[0, 1].tolist() == [255, 255, 255]


def test_modes_without_a_faithful_8bit_mapping_are_refused_not_clipped():
    """Point 1: float images and 32-bit integers beyond 16 bits are refused with the reason."""
    from unilip.data import to_rgb

    with pytest.raises(ImageReadError, match="float"):
        to_rgb(Image.fromarray(np.full((4, 4), 0.5, np.float32)))
    with pytest.raises(ImageReadError, match="70000.*outside the 16-bit range"):
        to_rgb(Image.fromarray(np.array([[0, 70000]], np.int32)))
    with pytest.raises(ImageReadError, match="mode HSV"):
        to_rgb(Image.new("HSV", (2, 2)))
    # 32-bit integer pixels within 0..65535 are what older Pillow made of 16-bit grey PNGs: read as 16-bit.
    wide = Image.fromarray(np.array([[0, 0x01FF, 65535]], np.int32))
    assert np.asarray(to_rgb(wide))[0, :, 0].tolist() == [0, 2, 255]


# ----------------------------------------------------------------------------------- EXIF, alpha
def _halves_jpeg(path: Path, orientation: int) -> None:
    """A 64 x 32 JPEG, left half red and right half blue, with an EXIF orientation tag."""
    pixels = np.zeros((32, 64, 3), np.uint8)
    pixels[:, :32] = [255, 0, 0]
    pixels[:, 32:] = [0, 0, 255]
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, quality=95, exif=exif)


def test_exif_orientation_is_applied(tmp_path):
    """Point 2: orientation 6 (rotate 90 clockwise to display): the left half displays on top."""
    _halves_jpeg(tmp_path / "six.jpg", 6)
    pixels = np.asarray(read_image(tmp_path / "six.jpg")).astype(int)
    assert pixels.shape == (64, 32, 3)
    assert pixels[:28, :, 0].mean() > 240 and pixels[:28, :, 2].mean() < 15  # red on top
    assert pixels[36:, :, 2].mean() > 240 and pixels[36:, :, 0].mean() < 15  # blue below
    _halves_jpeg(tmp_path / "three.jpg", 3)  # rotate 180: red moves to the right
    pixels = np.asarray(read_image(tmp_path / "three.jpg")).astype(int)
    assert pixels.shape == (32, 64, 3) and pixels[:, 36:, 0].mean() > 240 and pixels[:, :28, 2].mean() > 240


def test_exif_orientation_is_applied_to_16bit_pngs_too(tmp_path):
    """Point 2 with point 1: the orientation (PNG eXIf chunk) turns the exactly scaled 16-bit samples."""
    exif = Image.Exif()
    exif[0x0112] = 6
    grey = np.arange(24, dtype=np.uint16).reshape(4, 6) * 2700
    Image.fromarray(grey).save(tmp_path / "grey.png", exif=exif)
    assert (np.asarray(read_image(tmp_path / "grey.png"))[..., 0] == np.rot90(to8(grey), -1)).all()
    rgb = np.random.default_rng(3).integers(0, 65536, (4, 6, 3), dtype=np.uint16)
    data = png_bytes(rgb, 16, 2)
    ihdr_end = 8 + 25
    data = data[:ihdr_end] + _chunk(b"eXIf", exif.tobytes()) + data[ihdr_end:]
    assert (decoded(tmp_path, data, "rgb.png") == np.rot90(to8(rgb), -1)).all()


def test_transparent_pixels_read_as_white_whatever_colour_they_hide(tmp_path):
    """Point 3: RGBA, LA, palette and tRNS-keyed images composite over white instead of dropping alpha."""
    rgba = np.array([[[255, 0, 0, 0], [255, 0, 0, 128], [10, 20, 30, 255]]], np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.webp", lossless=True)
    for name in ("rgba.png", "rgba.webp"):
        # half alpha: round(255 * 128/255 + 255 * 127/255) = 255 for red, round(255 * 127/255) = 127 for green
        assert np.asarray(read_image(tmp_path / name))[0].tolist() == [[255, 255, 255], [255, 127, 127], [10, 20, 30]]
    Image.fromarray(np.array([[[0, 0], [90, 255]]], np.uint8), "LA").save(tmp_path / "la.png")
    assert np.asarray(read_image(tmp_path / "la.png"))[0].tolist() == [[255, 255, 255], [90, 90, 90]]

    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 255, 0])
    palette.putdata([0, 1])
    palette.save(tmp_path / "p.png", transparency=0)
    assert np.asarray(read_image(tmp_path / "p.png"))[0].tolist() == [[255, 255, 255], [0, 255, 0]]

    key = np.array([[[255, 0, 0], [255, 0, 1]]], np.uint8)
    Image.fromarray(key).save(tmp_path / "key.png", transparency=(255, 0, 0))
    assert np.asarray(read_image(tmp_path / "key.png"))[0].tolist() == [[255, 255, 255], [255, 0, 1]]


def test_low_bit_grey_transparent_level_is_scaled_like_the_pixels(tmp_path):
    """Point 3: a 2-bit PNG's tRNS level 1 (pixel value 85) is transparent; Pillow leaves the level unscaled."""
    levels = np.array([[[0], [1], [2], [3]]], np.uint8)
    pixels = decoded(tmp_path, png_bytes(levels, 2, 0, trns=struct.pack(">H", 1)))
    assert pixels[0, :, 0].tolist() == [0, 255, 170, 255]  # level 1 -> white; level 3 is plain white
    pixels = decoded(tmp_path, png_bytes(levels, 4, 0, trns=struct.pack(">H", 2)), "four.png")
    assert pixels[0, :, 0].tolist() == [0, 17, 255, 51]


def test_greyscale_and_palette_without_transparency_read_as_before(tmp_path):
    """Unchanged inputs: 8-bit grey is replicated to RGB, a palette maps through it, RGB is as stored."""
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(grey).save(tmp_path / "l.png")
    assert (np.asarray(read_image(tmp_path / "l.png")) == grey[..., None]).all()
    rgb = np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.bmp")
    assert (np.asarray(read_image(tmp_path / "rgb.bmp")) == rgb).all()
    Image.fromarray(rgb).quantize(16).save(tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as palette:
        assert palette.mode == "P"
        assert (np.asarray(read_image(tmp_path / "p.png")) == np.asarray(palette.convert("RGB"))).all()


# ----------------------------------------------------------------------------------- tiny inputs
def test_upscale_factor_is_the_eval_transform_enlargement():
    """Point 4: shorter side to ``size``; the centre crop never enlarges."""
    from unilip.data import MAX_UPSCALE, eval_transform, upscale_factor

    assert MAX_UPSCALE == 2.0
    assert upscale_factor(640, 480, 224) == pytest.approx(224 / 480)
    assert upscale_factor(16, 40, 64) == 4.0 > MAX_UPSCALE
    assert upscale_factor(500, 64, 128) == 2.0
    # The transform itself is the protocol's: a 16 x 40 input still comes out size x size.
    assert eval_transform(Image.new("RGB", (16, 40)), 64).shape == (3, 64, 64)
    with pytest.raises(ValueError):
        upscale_factor(0, 10, 64)


# ----------------------------------------------------------------------------------- listing
def _tiny_png(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (value, value, value)).save(path, format="PNG")


def test_folder_listing_matches_extensions_in_any_case_and_reports_what_it_skips(tmp_path):
    """Point 5: .JPEG/.Jpeg/.WEBP are read; TIFF, GIF and other image formats are reported, sidecars are not."""
    from unilip.data import list_image_sources

    for name in ("a.JPEG", "b.Jpeg", "c.WEBP", "d.png", "sub/e.PNG"):
        _tiny_png(tmp_path / name)
    Image.new("RGB", (4, 4)).save(tmp_path / "f.tif")
    Image.new("RGB", (4, 4)).save(tmp_path / "g.gif")
    (tmp_path / "h.json").write_text("{}")
    (tmp_path / "i.cls").write_text("3")
    os.symlink(tmp_path / "gone.png", tmp_path / "j.png")
    linked = tmp_path.parent / f"{tmp_path.name}-linked"
    _tiny_png(linked / "k.png")
    os.symlink(linked, tmp_path / "linked")

    listing = list_image_sources("folder", tmp_path)
    ids = [entry.id for entry in listing.entries]
    assert ids == ["a.JPEG", "b.Jpeg", "c.WEBP", "d.png", "sub/e.PNG"]
    skipped = {s.id: s.reason for s in listing.skipped}
    assert set(skipped) == {"f.tif", "g.gif", "j.png", "linked"}
    assert "TIFF" in skipped["f.tif"] and "GIF" in skipped["g.gif"]
    assert skipped["j.png"] == "broken symbolic link" and "not followed" in skipped["linked"]
    assert listing == list_image_sources("folder", tmp_path)  # stable
    with ImageLoader() as loader:
        assert all(loader.load(entry.source).image.size == (4, 4) for entry in listing.entries)


def test_sources_hold_absolute_paths_and_the_loader_returns_the_bytes_and_their_hash(tmp_path, monkeypatch):
    """Point 7: a source names the file to re-check, and the load gives the sha256 of exactly its bytes."""
    from unilip.data import list_image_sources, source_file

    _tiny_png(tmp_path / "x.png", 7)
    monkeypatch.chdir(tmp_path)
    (entry,) = list_image_sources("folder", ".").entries
    assert Path(source_file(entry.source)).is_absolute() and Path(source_file(entry.source)) == tmp_path / "x.png"
    loaded = ImageLoader().load(entry.source)
    data = (tmp_path / "x.png").read_bytes()
    assert loaded.raw == data and loaded.sha256 == hashlib.sha256(data).hexdigest()
    assert entry.size == len(data)
    builtin = ImageLoader().load(("builtin", "astronaut"))
    assert builtin.raw == builtin.image.tobytes() and source_file(("builtin", "astronaut")) is None


def test_the_loader_decodes_the_bytes_it_read_and_never_reopens_the_file(tmp_path, monkeypatch):
    """Point 6: one read per file; the image decoded is the bytes returned (and hashed)."""
    _tiny_png(tmp_path / "x.png", 9)
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda fp, *a, **k: opened.append(fp) or real_open(fp, *a, **k))
    loaded = ImageLoader().load(("file", str(tmp_path / "x.png")))
    assert opened and all(isinstance(fp, io.BytesIO) for fp in opened)
    assert np.asarray(loaded.image)[0, 0].tolist() == [9, 9, 9]


# ----------------------------------------------------------------------------------- bad files
def test_decompression_bomb_is_an_item_error_naming_the_size_and_the_limit(tmp_path, monkeypatch):
    """Point 6: DecompressionBombError (not an OSError) becomes an ImageReadError; the run goes on."""
    _tiny_png(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4)
    with pytest.raises(
        ImageReadError,
        match=r"big\.png: .*decompression bomb.*16 pixels.*limit of 8 "
        r"pixels.*PIL\.Image\.MAX_IMAGE_PIXELS",
    ):
        ImageLoader().load(("file", str(tmp_path / "big.png")))


def test_a_file_deleted_after_listing_is_an_item_error(tmp_path):
    """Point 6: no FileNotFoundError escapes the loader."""
    _tiny_png(tmp_path / "x.png")
    source = ("file", str(tmp_path / "x.png"))  # as listed
    (tmp_path / "x.png").unlink()
    with pytest.raises(ImageReadError, match=r"x\.png: no such file \(deleted after the dataset was listed\?\)"):
        ImageLoader().load(source)


def _shard(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def _png_data(value: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (value, value, value)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_tar_members_that_vanish_or_rot_are_item_errors_naming_shard_and_member(tmp_path):
    """Point 6: a member gone from a rewritten shard, a truncated shard, a deleted shard."""
    shard = tmp_path / "s.tar"
    a, b = ("tar", str(shard), "a.png"), ("tar", str(shard), "b.png")  # as listed
    _shard(shard, {"a.png": _png_data(1), "b.png": _png_data(2) * 40})
    with ImageLoader() as loader:
        assert np.asarray(loader.load(a)[0])[0, 0, 0] == 1

    _shard(shard, {"b.png": _png_data(2) * 40})  # rewritten without a.png
    with pytest.raises(ImageReadError, match=r"s\.tar:a\.png: no such member in the shard"), ImageLoader() as loader:
        loader.load(a)

    _shard(shard, {"a.png": _png_data(1), "b.png": _png_data(2) * 40})
    shard.write_bytes(shard.read_bytes()[:2048])  # cut inside b.png's data
    with pytest.raises(ImageReadError, match=r"s\.tar:b\.png: corrupt or truncated tar shard"), ImageLoader() as loader:
        loader.load(b)

    shard.unlink()
    with pytest.raises(ImageReadError, match=r"s\.tar:a\.png: no such shard"):
        ImageLoader().load(a)


def test_unreadable_or_damaged_shards_are_reported_not_fatal_or_silent(tmp_path):
    """Points 5 and 6: a non-tar shard is skipped with its reason; a damaged header mid-shard (where
    tarfile stops without a word) is reported; duplicate members and other image formats too."""
    from unilip.data import list_image_sources

    _shard(tmp_path / "a.tar", {"x.png": _png_data(), "x.tif": b"II*\0", "x.json": b"{}"})
    (tmp_path / "b.tar").write_bytes(b"this is not a tar file" * 40)
    _shard(tmp_path / "c.tar", {"y.png": _png_data(), "z.png": _png_data()})
    damaged = bytearray((tmp_path / "c.tar").read_bytes())
    second_header = 512 + -(-len(_png_data()) // 512) * 512
    damaged[second_header + 148 : second_header + 156] = b"garbage!"  # the checksum field
    (tmp_path / "c.tar").write_bytes(bytes(damaged))
    _shard(tmp_path / "d.tar", {"w.png": _png_data(1), "w.PNG": _png_data(), "v.png": _png_data()})
    with tarfile.open(tmp_path / "d.tar", "a") as archive:  # a second w.png, appended: it wins on extraction
        info = tarfile.TarInfo("w.png")
        data = _png_data(200)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))

    listing = list_image_sources("tar", tmp_path)
    assert [e.id for e in listing.entries] == [
        "a.tar/x.png",
        "c.tar/y.png",
        "d.tar/v.png",
        "d.tar/w.PNG",
        "d.tar/w.png",
    ]
    skipped = {s.id: s.reason for s in listing.skipped}
    assert set(skipped) == {"a.tar/x.tif", "b.tar", "c.tar", "d.tar/w.png"}
    assert skipped["b.tar"].startswith("not a readable tar shard")
    assert "cannot be parsed as tar" in skipped["c.tar"]
    assert "later member of the same name" in skipped["d.tar/w.png"]
    w = next(e for e in listing.entries if e.id == "d.tar/w.png")
    with ImageLoader() as loader:
        assert np.asarray(loader.load(w.source).image)[0, 0, 0] == 200


def test_non_utf8_file_names_list_load_and_report_printably(tmp_path, request):
    """Point 6: a name that is not UTF-8 is a legitimate file: listed, loaded, and named in messages
    that can be printed (a lone surrogate in a message cannot be written as UTF-8)."""
    directory = os.fsencode(tmp_path)
    with open(os.path.join(directory, b"caf\xe9.png"), "wb") as file:
        file.write(_png_data(5))
    with open(os.path.join(directory, b"caf\xe9-broken.png"), "wb") as file:
        file.write(b"not an image")
    loader = ImageLoader()
    request.addfinalizer(loader.close)
    with pytest.raises(ImageReadError) as error:
        loader.load(("file", os.fsdecode(os.path.join(directory, b"caf\xe9-broken.png"))))
    str(error.value).encode("utf-8")  # printable: no lone surrogate
    assert "caf\\xe9-broken.png: not a readable image" in str(error.value)

    from unilip.data import list_image_sources, printable

    listing = list_image_sources("folder", tmp_path)
    ids = [entry.id for entry in listing.entries]
    assert ids == ["caf\udce9-broken.png", "caf\udce9.png"]
    assert os.fsencode(ids[1]) == b"caf\xe9.png" and printable(ids[1]) == "caf\\xe9.png"
    assert np.asarray(loader.load(listing.entries[1].source).image)[0, 0, 0] == 5

    _shard(tmp_path / "s.tar", {"caf\udce9.png": _png_data(6)})
    (entry,) = list_image_sources("tar", tmp_path / "s.tar").entries
    assert entry.id == "s.tar/caf\udce9.png" and np.asarray(loader.load(entry.source).image)[0, 0, 0] == 6
