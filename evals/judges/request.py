"""One judge request: a text (plus an optional system line) and images, as chat-completions messages.

Images travel as base64 ``data:`` URLs of their exact bytes, labelled with their real format, so the
sha256 of those bytes identifies what the judge saw.
"""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals.judges.states import MissingImage

_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif", "BMP": "image/bmp"}


@dataclass(frozen=True)
class JudgeImage:
    """The bytes of one image as sent to the judge, and their MIME type."""

    data: bytes
    mime: str = "image/png"

    @property
    def sha256(self) -> str:
        """sha256 (hex) of the bytes sent."""
        return hashlib.sha256(self.data).hexdigest()

    def data_url(self) -> str:
        """The image as a base64 ``data:`` URL."""
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"

    @classmethod
    def from_file(cls, path: str | Path) -> JudgeImage:
        """Read an image file as is (no re-encoding); raise :class:`MissingImage` when absent or unreadable."""
        from PIL import Image, UnidentifiedImageError

        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise MissingImage(f"{path}: {error.strerror or error}") from None
        try:
            with Image.open(io.BytesIO(data)) as image:
                image_format = image.format or ""
        except (UnidentifiedImageError, OSError):
            raise MissingImage(f"{path}: not a readable image") from None
        return cls(data=data, mime=_MIME.get(image_format, "image/png"))


@dataclass(frozen=True)
class JudgeRequest:
    """What one judgement asks: ``text`` then ``images`` in one user turn, after an optional ``system`` line.

    ``template_sha256`` names the template ``text`` was rendered from; it goes into the cache key with
    the rendered text itself, so editing a template never reuses answers to the old one.
    """

    text: str
    images: tuple[JudgeImage, ...] = ()
    system: str | None = None
    template_sha256: str = ""

    def messages(self) -> list[dict[str, Any]]:
        """The chat-completions ``messages``: the system line if any, then one user turn (text, images)."""
        content: list[dict[str, Any]] = [{"type": "text", "text": self.text}]
        content += [{"type": "image_url", "image_url": {"url": image.data_url()}} for image in self.images]
        messages: list[dict[str, Any]] = [{"role": "system", "content": self.system}] if self.system else []
        return messages + [{"role": "user", "content": content}]

    def identity(self) -> dict[str, Any]:
        """The request's content identity (hashes only) for cache keys."""
        return {
            "template_sha256": self.template_sha256,
            "system_sha256": hashlib.sha256((self.system or "").encode()).hexdigest(),
            "text_sha256": hashlib.sha256(self.text.encode()).hexdigest(),
            "images_sha256": [image.sha256 for image in self.images],
        }
