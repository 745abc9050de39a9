"""Model references outside UniLIP's own (``ADAPTER:MODEL``) in the model-side commands.

``unilip reconstruct``, ``unilip generate`` and ``unilip edit`` take the references ``unilip eval run`` takes:
a variant name, a local directory or weights file, a repo id in the local Hugging Face cache, or
``ADAPTER:MODEL`` (``diffusers-ae:DIR``, ``diffusers-pipe:DIR``, an installed third-party adapter ...). UniLIP's
own are read here (``unilip.variants``); an ``ADAPTER:`` reference goes to the resolver that the evaluation
harness registers when it plugs its commands in (the ``unilip.cli`` entry point), so this package never
imports the harness.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

# (reference, options) -> an adapter (an object with describe() and the protocol methods), or None when the
# reference is UniLIP's own. Set by the harness's command-line plug-in.
ExternalResolver = Callable[..., Any]
_resolver: ExternalResolver | None = None


def set_external_resolver(resolver: ExternalResolver) -> None:
    """Install the resolver of ``ADAPTER:MODEL`` references (the harness does, when its commands register)."""
    global _resolver
    _resolver = resolver


def resolve_model_reference(reference: str, capability: str, **options: Any) -> tuple[Any | None, str]:
    """``(adapter, None-or-reference)``: for an ``ADAPTER:MODEL`` reference, the adapter it names, loaded and
    checked for ``capability``, and None for UniLIP's own (a variant, a path, a repo id, or ``unilip:MODEL``),
    which the caller loads itself from the returned reference (``unilip:`` removed).

    Raises:
        ValueError: the reference names an adapter but no resolver is installed (the harness is not
            installed), an unknown adapter, or a model that cannot do ``capability``.
    """
    if reference.startswith("unilip:"):
        return None, reference.removeprefix("unilip:")
    if ":" not in reference or Path(reference).exists():
        return None, reference
    if _resolver is None:
        raise ValueError(
            f"{reference}: ADAPTER:MODEL references need the evaluation harness (the evals package) installed"
        )
    return _resolver(reference, capability, **options), reference
