"""Judge prompt templates: a system line and a user text with placeholders, identified by their sha256."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from evals.files import canonical_hash
from evals.judges.request import JudgeRequest


@dataclass(frozen=True)
class JudgeTemplate:
    """A judge prompt: an optional system line and a user text with placeholders such as ``{prompt}``.

    ``source`` says where it came from (``builtin:NAME`` or a file's name); ``sha256`` identifies its text
    and goes into the spec fingerprint and the cache keys.
    """

    user: str
    system: str | None = None
    source: str = "inline"

    @property
    def sha256(self) -> str:
        """sha256 of the template's text (system and user)."""
        return canonical_hash({"system": self.system, "user": self.user}, length=64)

    def describe(self) -> dict[str, str]:
        """Where the template came from and its hash, for the spec."""
        return {"source": self.source, "sha256": self.sha256}

    def render(self, values: Mapping[str, str]) -> JudgeRequest:
        """A request whose text has each placeholder (a key of ``values``) replaced; images are added later."""
        text = self.user
        for placeholder, value in values.items():
            text = text.replace(placeholder, value)
        return JudgeRequest(text=text, system=self.system, template_sha256=self.sha256)

    @classmethod
    def load(cls, path: str | Path, placeholders: tuple[str, ...], source: str | None = None) -> JudgeTemplate:
        """Read a YAML template (``user`` required, ``system`` optional) that uses every placeholder given."""
        import yaml

        path = Path(path).expanduser()
        if not path.is_file():
            raise ValueError(f"judge template {path}: no such file")
        data = yaml.safe_load(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("user"), str):
            raise ValueError(f"judge template {path}: want a YAML mapping with a 'user' text (and optional 'system')")
        unknown = sorted(set(data) - {"system", "user"})
        if unknown:
            raise ValueError(f"judge template {path}: unknown keys {unknown} (want system, user)")
        system = data.get("system")
        if system is not None and not isinstance(system, str):
            raise ValueError(f"judge template {path}: 'system' must be text")
        template = cls(
            user=data["user"], system=system.strip() if system else None, source=source or f"file:{path.name}"
        )
        template.require(placeholders)
        return template

    def require(self, placeholders: tuple[str, ...]) -> None:
        """Raise ValueError unless the user text uses every placeholder given."""
        missing = [p for p in placeholders if p not in self.user]
        if missing:
            raise ValueError(f"judge template {self.source} does not use {', '.join(missing)}")
