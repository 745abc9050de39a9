"""A persistent, content-keyed cache of judge answers: one atomically written JSON file per key.

The key covers the judge (model and version), the request (template hash, rendered text hash, image
hashes) and the decoding parameters. Only answers that gave an ``ok`` judgement are stored, so a
failed judgement is asked again next time; a cached answer costs no call.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from evals.files import atomic_write_json
from evals.judges.config import JudgeConfig
from evals.judges.request import JudgeRequest

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1


def cache_key_fields(request: JudgeRequest, config: JudgeConfig) -> dict[str, Any]:
    """The fields a cache key hashes (kept in each entry, so an entry says what it answers)."""
    return {"format": CACHE_FORMAT, **config.fingerprint_fields(), **request.identity()}


def cache_key(request: JudgeRequest, config: JudgeConfig) -> str:
    """sha256 (hex) of :func:`cache_key_fields`."""
    text = json.dumps(cache_key_fields(request, config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class JudgeCache:
    """Judge answers on disk under ``root/<key[:2]>/<key>.json``.

    Safe for several threads and processes: entries are written atomically, and two writers of one
    key write the same answer's content (either one wins).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """The file of ``key`` (two-character fan-out keeps folders small)."""
        return self.root / key[:2] / f"{key}.json"

    def __contains__(self, key: str) -> bool:
        return self.path(key).is_file()

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored entry for ``key``, or None (an unreadable entry counts as absent, with a warning)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            logger.warning("judge cache entry %s is unreadable (%s); asking the judge again", path, error)
            return None
        if not isinstance(entry, dict) or not isinstance(entry.get("content"), str):
            logger.warning("judge cache entry %s has no answer text; asking the judge again", path)
            return None
        return entry

    def put(self, key: str, fields: dict[str, Any], content: str, response: dict[str, Any]) -> None:
        """Store an answer with what it answers (``fields``) and what the endpoint said about it."""
        entry = {
            "key": key,
            "fields": fields,
            "content": content,
            "stored_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **response,
        }
        atomic_write_json(self.path(key), entry)
