"""InternVL3's chat conventions, as VLMEvalKit runs InternVL3 for the understanding benchmarks: no model needed.

UniLIP's understanding numbers are stock InternVL3 with the UniLIP encoder swapped in, evaluated by VLMEvalKit's
``InternVLChat`` wrapper (``version="V2.0"``). Everything here reproduces one convention of that path, so a score
measured through it is comparable with the published rows:

- tiling (``vlmeval/vlm/internvl/utils.py``: ``find_closest_aspect_ratio``, ``dynamic_preprocess``): the image is
  resized to the grid of 448 px tiles whose aspect ratio is closest to its own, among grids of at most
  ``max_num`` tiles; a tie goes to the later (larger) grid when the image has more than half that grid's pixels;
  a thumbnail of the whole image follows when there is more than one tile;
- pixels (``build_transform``, ``load_image``): RGB, bicubic resize to 448 x 448, ``ToTensor``, ImageNet
  normalisation (:mod:`unilip.pixels`);
- tile budget (``internvl_chat.py``: ``InternVLChat.set_max_num``, ``generate_v2``): ``max_num`` per benchmark,
  divided across the images of an item under a total of 64; MMMU's first image is upscaled 2x (bilinear) first;
- question layout (``utils.py``: ``reorganize_prompt``): one image -> ``"<image>\\n"`` + the texts joined by
  newlines; several -> ``"Image-1: <image>\\nImage-2: <image>\\n..."`` before the text;
- the chat text (InternVL's ``InternVLChatModel.chat`` with its ``internvl2_5`` conversation template, which
  InternVL3 uses): the default system message, ``<|im_start|>ROLE\\n...<|im_end|>\\n`` turns, and each
  ``<image>`` replaced in order by ``<img>`` + 256 ``<IMG_CONTEXT>`` per tile + ``</img>``.

The model side (loading InternVL3, swapping the encoder, generating) builds on these; it lives elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from PIL import Image

from unilip.pixels import IMAGENET_MEAN, IMAGENET_STD
from unilip.prompts import IMAGE_PLACEHOLDER, IMG_CONTEXT, IMG_END, IMG_START

if TYPE_CHECKING:
    import torch

TILE_SIZE = 448
# (448 / 14)^2 patches per tile, pixel-shuffled by 0.5 in each direction: InternVL3's ``num_image_token``.
TOKENS_PER_TILE = 256
DEFAULT_MAX_TILES = 6
# ``set_max_num``'s ``total_max_num``: the per-image ``max_num`` is at most this divided by the item's image count.
TOTAL_TILE_BUDGET = 64

# ``set_max_num``'s benchmark lists. A benchmark gets a list's value when one of its names is a substring of the
# benchmark name (VLMEvalKit's ``listinstr``: case-sensitive), checked 12, then 18, then 24; else the default.
# (VLMEvalKit gives video benchmarks 1; no video benchmark runs through this module.)
_MAX_TILES_BY_BENCHMARK: tuple[tuple[int, tuple[str, ...]], ...] = (
    (12, ("ChartQA_TEST", "MMMU_DEV_VAL", "MMMU_TEST", "MME-RealWorld", "VCR_EN", "VCR_ZH", "OCRVQA")),
    (18, ("DocVQA_VAL", "DocVQA_TEST", "DUDE", "MMLongBench_DOC", "SLIDEVQA")),
    (24, ("InfoVQA_VAL", "InfoVQA_TEST", "OCRBench", "HRBench4K", "HRBench8K")),
)
# ``generate_v2`` upscales the first image of an item when this is a substring of the benchmark name.
_UPSCALE_FIRST_IMAGE_MARK = "MMMU"

# InternVL's ``internvl2_5`` conversation template (InternVL3's ``config.template``) and its default system message,
# which VLMEvalKit keeps (it only replaces it for its R1 chain-of-thought mode).
INTERNVL3_SYSTEM_MESSAGE = (
    "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
)
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"


# ------------------------------------------------------------------------------------------------------ tiling


def candidate_grids(min_num: int = 1, max_num: int = DEFAULT_MAX_TILES) -> list[tuple[int, int]]:
    """The ``(columns, rows)`` grids ``dynamic_preprocess`` considers, in its order: by tile count.

    Grids of equal tile count keep the order in which CPython iterates the set InternVL builds them into; it is
    rebuilt here the same way (same elements, same insertion order) because that order decides a tie between two
    such grids in :func:`find_closest_aspect_ratio`.
    """
    if min_num < 1 or max_num < min_num:
        raise ValueError(f"tile counts must satisfy 1 <= min_num <= max_num; got min_num={min_num}, max_num={max_num}")
    grids = {
        (columns, rows)
        for n in range(min_num, max_num + 1)
        for columns in range(1, n + 1)
        for rows in range(1, n + 1)
        if min_num <= columns * rows <= max_num
    }
    return sorted(grids, key=lambda grid: grid[0] * grid[1])


def find_closest_aspect_ratio(
    aspect_ratio: float, grids: Sequence[tuple[int, int]], width: int, height: int, image_size: int = TILE_SIZE
) -> tuple[int, int]:
    """The grid of ``grids`` whose columns/rows ratio is closest to ``aspect_ratio`` (width / height).

    Ties follow InternVL exactly: scanning ``grids`` in order, a later grid as close as the best so far replaces
    it only when the image's area exceeds half the grid's area in pixels (``0.5 * image_size^2 * columns * rows``);
    so a large enough image moves up to the larger of two equally shaped grids, a small one stays.
    """
    best_difference = float("inf")
    best = (1, 1)
    area = width * height
    for columns, rows in grids:
        difference = abs(aspect_ratio - columns / rows)
        if difference < best_difference:
            best_difference, best = difference, (columns, rows)
        elif difference == best_difference and area > 0.5 * image_size * image_size * columns * rows:
            best = (columns, rows)
    return best


def dynamic_preprocess(
    image: Image.Image,
    min_num: int = 1,
    max_num: int = DEFAULT_MAX_TILES,
    image_size: int = TILE_SIZE,
    use_thumbnail: bool = True,
) -> list[Image.Image]:
    """Cut ``image`` into ``image_size`` tiles on its closest grid, row by row, plus a thumbnail when tiled.

    The image is resized (bicubic) to ``columns x rows`` tiles; the thumbnail is the whole image resized
    (bicubic) to one tile, appended last, only when the grid has more than one tile. Bicubic is Pillow's
    default ``resize`` filter for RGB images, which is what InternVL relies on (pass RGB images, as
    :func:`preprocess_image` does). ``use_thumbnail`` defaults to True here because ``load_image`` always
    passes True (InternVL's own default is False).
    """
    width, height = image.size
    if width < 1 or height < 1:
        raise ValueError(f"cannot tile an empty image ({width} x {height})")
    columns, rows = find_closest_aspect_ratio(
        width / height, candidate_grids(min_num, max_num), width, height, image_size
    )
    resized = image.resize((columns * image_size, rows * image_size), Image.Resampling.BICUBIC)
    tiles = [
        resized.crop((column * image_size, row * image_size, (column + 1) * image_size, (row + 1) * image_size))
        for row in range(rows)
        for column in range(columns)
    ]
    if use_thumbnail and len(tiles) != 1:
        tiles.append(image.resize((image_size, image_size), Image.Resampling.BICUBIC))
    return tiles


def tiles_to_tensor(tiles: Sequence[Image.Image], image_size: int = TILE_SIZE) -> torch.Tensor:
    """PIL tiles -> ``N x 3 x image_size x image_size`` float32, as InternVL's ``build_transform`` makes them.

    Each tile is converted to RGB, resized bicubic to ``image_size`` square (a no-op for tiles from
    :func:`dynamic_preprocess`), scaled to [0, 1] (``ToTensor``) and normalised with ImageNet's mean and std.
    """
    import numpy as np
    import torch

    if not tiles:
        raise ValueError("no tiles to convert (dynamic_preprocess always returns at least one)")
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    tensors = []
    for tile in tiles:
        rgb = tile if tile.mode == "RGB" else tile.convert("RGB")
        if rgb.size != (image_size, image_size):
            rgb = rgb.resize((image_size, image_size), Image.Resampling.BICUBIC)
        pixels = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).float().div(255)
        tensors.append(pixels.sub(mean).div(std))
    return torch.stack(tensors)


# ------------------------------------------------------------------------------------------- per-item budget


def max_tiles_for(benchmark: str | None, num_images: int) -> int:
    """The ``max_num`` each image of an item gets: the benchmark's value, capped by the 64-tile budget.

    The benchmark's value is 12 for MMMU_DEV_VAL, MMMU_TEST, ChartQA_TEST, MME-RealWorld, VCR_EN/ZH and OCRVQA;
    18 for DocVQA, DUDE, MMLongBench_DOC and SLIDEVQA; 24 for InfoVQA, OCRBench and HRBench; 6 otherwise (MME,
    MMBench, MMVP, AI2D, SEED-Bench, MM-Vet, and ``None``). Names match as VLMEvalKit's do: a listed name that
    is a substring of ``benchmark``. Each image then gets ``max(1, min(value, 64 // num_images))``: the cap
    bounds ``max_num``, not the tiles actually made, which add a thumbnail per tiled image (6 images at 10 tiles
    each make 66).
    """
    if num_images < 1:
        raise ValueError(
            f"an item with {num_images} images has no tile budget to share; call this only for items with images"
        )
    per_image = DEFAULT_MAX_TILES
    if benchmark is not None:
        for value, names in _MAX_TILES_BY_BENCHMARK:
            if any(name in benchmark for name in names):
                per_image = value
                break
    return max(1, min(per_image, TOTAL_TILE_BUDGET // num_images))


def upscales_first_image(benchmark: str | None) -> bool:
    """Whether the item's first image is upscaled 2x before tiling: for benchmarks named with "MMMU" only.

    VLMEvalKit's ``generate_v2`` does so for the first image of every MMMU item (the only image, or image 1 of
    several), with Pillow's bilinear filter, before ``dynamic_preprocess``; the larger image may also choose a
    larger grid through the area rule of :func:`find_closest_aspect_ratio`.
    """
    return benchmark is not None and _UPSCALE_FIRST_IMAGE_MARK in benchmark


def preprocess_image(
    image: Image.Image, max_num: int = DEFAULT_MAX_TILES, upscale: bool = False, image_size: int = TILE_SIZE
) -> torch.Tensor:
    """One image -> its tiles (``N x 3 x image_size x image_size``), as VLMEvalKit's ``load_image``: RGB, optional
    2x bilinear upscale, :func:`dynamic_preprocess` with a thumbnail, :func:`tiles_to_tensor`.

    RGB conversion is Pillow's ``convert("RGB")`` (an alpha channel is dropped, not composited), as VLMEvalKit's
    ``Image.open(path).convert("RGB")``. ``image_size``: InternVL3's 448 unless a (tiny) model tiles at another size.
    """
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if upscale:
        rgb = rgb.resize((rgb.width * 2, rgb.height * 2), Image.Resampling.BILINEAR)
    return tiles_to_tensor(
        dynamic_preprocess(rgb, max_num=max_num, image_size=image_size, use_thumbnail=True), image_size
    )


def preprocess_images(images: Sequence[Image.Image], benchmark: str | None) -> tuple[torch.Tensor, list[int]]:
    """All images of one item -> their tiles concatenated in order, and the tile count of each image.

    Applies :func:`max_tiles_for` and :func:`upscales_first_image`. An item without images gives an empty
    ``0 x 3 x 448 x 448`` tensor and ``[]`` (VLMEvalKit would divide by zero there).
    """
    import torch

    if not images:
        return torch.empty(0, 3, TILE_SIZE, TILE_SIZE), []
    max_num = max_tiles_for(benchmark, len(images))
    upscale_first = upscales_first_image(benchmark)
    per_image = [
        preprocess_image(image, max_num=max_num, upscale=upscale_first and index == 0)
        for index, image in enumerate(images)
    ]
    return torch.cat(per_image), [tiles.shape[0] for tiles in per_image]


# --------------------------------------------------------------------------------------------------- the text


class ImageSlot:
    """Where an image sits among the text parts of a request (use the module's :data:`IMAGE`)."""

    def __repr__(self) -> str:
        return "IMAGE"


IMAGE = ImageSlot()


def layout_question(parts: Sequence[str | ImageSlot]) -> str:
    """A request's interleaved text and images -> the question text with ``<image>`` tags, as VLMEvalKit lays
    it out for InternVL (``reorganize_prompt``).

    - one image: ``"<image>\\n"`` + the text parts joined by ``"\\n"`` (wherever the image was);
    - several images: ``"Image-1: <image>\\nImage-2: <image>\\n..."``, then the parts concatenated with no
      separator, each image written as ``<Image-k>``; when all the images come together at the end (how
      VLMEvalKit's InternVL prompts put them, MMMU included), that run of ``<Image-k>`` marks is removed;
    - no image: the text parts concatenated.
    """
    image_count = 0
    for part in parts:
        if isinstance(part, ImageSlot):
            image_count += 1
        elif not isinstance(part, str):
            raise TypeError(f"a request part is text (str) or unilip.internvl.IMAGE, not {type(part).__name__}")
    texts = [part for part in parts if isinstance(part, str)]
    if image_count == 1:
        return IMAGE_PLACEHOLDER + "\n" + "\n".join(texts)
    body = []
    index = 0
    for part in parts:
        if isinstance(part, ImageSlot):
            index += 1
            body.append(f"<Image-{index}>")
        else:
            body.append(part)
    header = "".join(f"Image-{k}: {IMAGE_PLACEHOLDER}\n" for k in range(1, image_count + 1))
    trailing_marks = "".join(f"<Image-{k}>" for k in range(1, image_count + 1))
    return header + "".join(body).replace(trailing_marks, "")


def image_placeholder(num_tiles: int, tokens_per_tile: int = TOKENS_PER_TILE) -> str:
    """What one ``<image>`` becomes: ``<img>`` + ``num_tiles * tokens_per_tile`` x ``<IMG_CONTEXT>`` + ``</img>``."""
    if num_tiles < 1:
        raise ValueError(f"an image has at least one tile; got {num_tiles}")
    return IMG_START + IMG_CONTEXT * (num_tiles * tokens_per_tile) + IMG_END


def build_chat_prompt(
    question: str,
    tiles_per_image: Sequence[int] = (),
    system_message: str = INTERNVL3_SYSTEM_MESSAGE,
    tokens_per_tile: int = TOKENS_PER_TILE,
) -> str:
    """The whole text InternVL3 reads for one question, up to where the assistant's answer starts.

    ``<|im_start|>system\\n{system_message}<|im_end|>\\n<|im_start|>user\\n{question}<|im_end|>\\n``
    ``<|im_start|>assistant\\n``, with the question's k-th ``<image>`` replaced by
    :func:`image_placeholder` of ``tiles_per_image[k]``. As InternVL's ``chat``, a question with images but no
    ``<image>`` tag gets ``"<image>\\n"`` in front. Unlike it, a tag count that differs from the image count,
    an empty question, or a tag inside the system message is refused (InternVL would leave tags or images
    unmatched, or write an empty user turn without its ``<|im_end|>``).
    """
    if not question:
        raise ValueError("the question is empty; InternVL's template writes no user turn for it")
    if IMAGE_PLACEHOLDER in system_message:
        raise ValueError(f"the system message holds {IMAGE_PLACEHOLDER!r}; images belong in the question")
    if tiles_per_image and IMAGE_PLACEHOLDER not in question:
        question = IMAGE_PLACEHOLDER + "\n" + question
    tags = question.count(IMAGE_PLACEHOLDER)
    if tags != len(tiles_per_image):
        raise ValueError(
            f"the question has {tags} {IMAGE_PLACEHOLDER!r} tags for {len(tiles_per_image)} images; "
            "lay it out with unilip.internvl.layout_question"
        )
    for num_tiles in tiles_per_image:
        question = question.replace(IMAGE_PLACEHOLDER, image_placeholder(num_tiles, tokens_per_tile), 1)
    return f"{IM_START}system\n{system_message}{IM_END}\n{IM_START}user\n{question}{IM_END}\n{IM_START}assistant\n"
