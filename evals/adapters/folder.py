"""``folder:DIR``: outputs made elsewhere, scored as if the harness had produced them.

The folder stands in for a model: each item a benchmark asks for is read from a file, matched by the item's
output key (the benchmark's item id):

- **reconstruct** (``recon@*``): by the reference image's relative path, any image extension, with or
  without ``unilip reconstruct``'s ``.recon`` suffix: ``n01440764/ILSVRC2012_val_00000293.png`` (or ``.recon.png``)
  for ``n01440764/ILSVRC2012_val_00000293.JPEG``; ``astronaut.recon.png`` for the built-in ``astronaut``. The
  reference's own extension may be kept (``a.jpg.recon.png``), which is how ``a.jpg`` and ``a.png`` of one folder
  are told apart; one output file that two items would match fails both as ambiguous. Files must have the
  benchmark's resolution (``--size``; the default is the size of the folder's first image); ``unilip
  reconstruct``'s ``*.input.png`` are ignored.
- **generate**: GenEval's layout, ``<item id>/samples/00000.png`` ..., ``unilip generate``'s,
  ``<item id>/00000.png`` ..., or one image per item id, ``<item id>.png`` (WISE's prompt ids; GenEval with one
  image per prompt).
- **edit** (ImgEdit): ``<item id>.png``, the edit's key.

Each file the benchmark expects but the folder lacks, cannot read, or holds at another size makes its item a
failed item with the reason; files no item matches are listed in the results (``outputs_check.extra``). The
folder's identity is its content digest (relative paths and bytes of every image in it): a folder whose files
changed since a run is another model to that run directory (score it into a new ``--out``, or pass ``--fresh``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from evals.adapter import ModelAdapter, ModelInfo, OutputCheck

logger = logging.getLogger(__name__)

RECON_SUFFIX = ".recon"  # unilip reconstruct writes <stem>.recon.png beside its <stem>.input.png
INPUT_SUFFIX = ".input"
SHOWN = 20


def _image_extensions() -> tuple[str, ...]:
    from unilip.data import IMAGE_EXTENSIONS

    return IMAGE_EXTENSIONS


def _strip_extension(relative: str) -> str | None:
    """``a/b.png`` -> ``a/b``; None for a file that is not an image by its extension (any letter case)."""
    path = PurePosixPath(relative)
    if path.suffix.lower() not in _image_extensions():
        return None
    return path.with_suffix("").as_posix()


@dataclass
class _Index:
    """The folder's image files: relative path -> size in bytes, and the lookups built from it."""

    files: dict[str, int]
    by_base: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def scan(cls, root: Path) -> _Index:
        files = {}
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root).as_posix()
            if not path.is_file() or any(part.startswith(".") for part in PurePosixPath(relative).parts):
                continue
            base = _strip_extension(relative)
            if base is None or base.endswith(INPUT_SUFFIX):
                continue  # not an image, or an input unilip reconstruct saved beside its reconstruction
            files[relative] = path.stat().st_size
        index = cls(files)
        for relative in files:
            base = _strip_extension(relative)
            index.by_base.setdefault(base.removesuffix(RECON_SUFFIX), []).append(relative)
        return index


class FolderAdapter(ModelAdapter):
    """A folder of images made elsewhere (reconstructions, generations, edits) behind the protocol."""

    capabilities = frozenset({"reconstruct", "generate", "edit"})
    summary = "outputs made elsewhere: reconstructions by relative path, generations (GenEval layout), edits by id"
    keyed_outputs = True
    weights_changed = "the folder's files changed since that run: added, removed or edited"

    def __init__(self, root: Path, model_ref: str) -> None:
        self.root = root
        self.model_ref = model_ref
        self.index = _Index.scan(root)
        if not self.index.files:
            raise ValueError(f"folder:{model_ref}: no image files in {root} (read: {' '.join(_image_extensions())})")
        self._digest: str | None = None
        self.native_size = _first_square_size(root, self.index)

    @classmethod
    def probe(cls, model: str, seed: int = 0, device: str = "cpu", dtype: str = "float32") -> ModelInfo:
        root = _root(model)
        index = _Index.scan(root)
        if not index.files:
            raise ValueError(f"folder:{model}: no image files in {root} (read: {' '.join(_image_extensions())})")
        return ModelInfo("folder", f"folder:{model}", cls.capabilities, _first_square_size(root, index))

    @classmethod
    def load(cls, model: str, seed: int = 0, device: str = "cpu", dtype: str = "float32") -> FolderAdapter:
        return cls(_root(model), model)

    def describe(self) -> dict[str, Any]:
        if self._digest is None:
            digest = hashlib.sha256()
            for relative in self.index.files:
                digest.update(relative.encode() + b"\0")
                digest.update(hashlib.sha256((self.root / relative).read_bytes()).digest())
            self._digest = digest.hexdigest()
        return {
            "adapter": "folder",
            "model": f"folder:{self.model_ref}",
            "weights_source": str(self.root.resolve()),
            # The folder's content digest stands where a model's weights digest stands: it is the identity.
            "weights_sha256": self._digest,
            "files": len(self.index.files),
            "config": {"matching": "by item output key (see evals/adapters/folder.py)"},
        }

    # ------------------------------------------------------------------ matching
    def _find(self, capability: str, key: str, count: int) -> tuple[list[str], str | None]:
        """The files of ``key`` (``count`` of them), or the reason they cannot be had."""
        if capability == "reconstruct":
            if len(self.index.by_base.get(key, [])) == 1:  # the reference's extension kept: a.jpg.recon.png
                return self.index.by_base[key], None
            return self._one(_strip_extension(key) or key, key, "a reconstruction")
        if capability == "edit":
            return self._one(key, key, "an edited image")
        if capability == "generate":
            # GenEval's layout first, then unilip generate's (<index>/<k>.png); the first that has every image.
            layouts = [[f"{key}/{inner}{k:05d}" for k in range(count)] for inner in ("samples/", "")]
            for candidate in layouts:
                found = [self.index.by_base.get(base, []) for base in candidate]
                if all(len(matches) == 1 for matches in found):
                    return [matches[0] for matches in found], None
            layout = layouts[0]
            found = [self.index.by_base.get(base, []) for base in layout]
            if count == 1 and len(self.index.by_base.get(key, [])) == 1:
                return self.index.by_base[key], None
            missing = [f"{base}.png" for base, matches in zip(layout, found, strict=True) if not matches]
            if missing:
                also = f" (or {key}.png)" if count == 1 else ""
                return [], f"missing in folder:{self.model_ref}: {', '.join(missing)}{also}"
            doubled = [matches for matches in found if len(matches) > 1]
            return [], f"ambiguous in folder:{self.model_ref}: {', '.join(doubled[0])} all match"
        raise ValueError(f"folder: adapters cannot '{capability}'")

    def _one(self, base: str, key: str, what: str) -> tuple[list[str], str | None]:
        matches = self.index.by_base.get(base, [])
        if len(matches) == 1:
            return matches, None
        if not matches:
            return [], f"missing in folder:{self.model_ref}: {what} for {key} ({base}.png, or another image extension)"
        return [], f"ambiguous in folder:{self.model_ref}: {', '.join(matches)} all match {key}"

    def check_outputs(
        self, capability: str, keys: Sequence[str], per_item: int = 1, size: int | None = None
    ) -> OutputCheck:
        missing: dict[str, str] = {}
        matched: dict[str, list[str]] = {}
        for key in keys:
            files, reason = self._find(capability, key, per_item)
            if reason:
                missing[key] = reason
            else:
                matched[key] = files
        users: dict[str, list[str]] = {}
        for key, files in matched.items():
            for relative in files:
                users.setdefault(relative, []).append(key)
        for relative, owners in users.items():
            if len(owners) > 1:  # a.jpg and a.png would both be scored against a.png: neither is
                for key in owners:
                    missing[key] = (
                        f"ambiguous in folder:{self.model_ref}: {relative} matches {', '.join(owners)}; keep the "
                        f"reference's extension in the output names ({owners[0]}.png)"
                    )
        for key, files in matched.items():
            if key in missing:
                continue
            problem = next((p for p in (self._unusable(relative, size) for relative in files) if p), None)
            if problem:
                missing[key] = problem
        extra = tuple(relative for relative in self.index.files if relative not in users)
        if missing:
            shown = "; ".join(list(missing.values())[:SHOWN])
            logger.warning("folder:%s: %d item(s) have no usable output: %s", self.model_ref, len(missing), shown)
        if extra:
            logger.warning(
                "folder:%s: %d file(s) match no item: %s%s",
                self.model_ref,
                len(extra),
                ", ".join(extra[:SHOWN]),
                " ..." if len(extra) > SHOWN else "",
            )
        return OutputCheck(missing, extra)

    def _unusable(self, relative: str, size: int | None) -> str | None:
        """Why an output file cannot stand for its item (unreadable, another size), or None."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(self.root / relative) as image:
                found = image.size
                image.verify()  # the chunks' checksums, without decoding the pixels
        except (OSError, UnidentifiedImageError, SyntaxError) as error:
            return f"unreadable in folder:{self.model_ref}: {relative} ({error})"
        if size is not None and found != (size, size):
            return (
                f"folder:{self.model_ref}: {relative} is {found[0]}x{found[1]}, the benchmark compares at "
                f"{size}x{size} (--size; the default is the size of the folder's first image)"
            )
        return None

    def _read(self, capability: str, key: str, count: int) -> list[Any]:
        from unilip.data import read_image

        files, reason = self._find(capability, key, count)
        if reason:
            # The runtime fails these items before asking (check_outputs); reaching here means a file went away.
            raise FileNotFoundError(reason)
        return [read_image(self.root / relative) for relative in files]

    # ------------------------------------------------------------------ the protocol
    def reconstruct(self, images: torch.Tensor, keys: Sequence[str] | None = None) -> torch.Tensor:
        import numpy as np

        if keys is None or len(keys) != len(images):
            raise TypeError("folder: reconstruct needs one output key per image (keys=)")
        height, width = images.shape[-2:]
        out = []
        for key in keys:
            (image,) = self._read("reconstruct", key, 1)
            if image.size != (width, height):  # check_outputs fails these items first; a file changed since
                raise ValueError(
                    f"folder:{self.model_ref}: the reconstruction of {key} is {image.size[0]}x{image.size[1]}, the "
                    f"benchmark compares at {width}x{height}; it changed during the run: run again"
                )
            out.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1))
        return torch.stack(out)

    def generate(self, prompts: list[str], n: int, seed: int, keys: Sequence[str] | None = None) -> list[list[Any]]:
        if keys is None or len(keys) != len(prompts):
            raise TypeError("folder: generate needs one output key per prompt (keys=)")
        return [self._read("generate", key, n) for key in keys]

    def edit(self, image: Any, instruction: str, seed: int, keys: Sequence[str] | None = None) -> Any:
        if keys is None or len(keys) != 1:
            raise TypeError("folder: edit needs the edit's output key (keys=[key])")
        return self._read("edit", keys[0], 1)[0]


def _root(model: str) -> Path:
    root = Path(model).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"folder:{model}: {root} does not exist (expected a folder of output images)")
    if not root.is_dir():
        raise ValueError(f"folder:{model}: {root} is a file; folder: takes a directory of output images")
    return root


def _first_square_size(root: Path, index: _Index) -> int | None:
    """The side of the folder's first image if it is square: the default resolution of ``recon@*`` on it."""
    from PIL import Image

    for relative in index.files:
        with Image.open(root / relative) as image:
            width, height = image.size
        return width if width == height else None
    return None
