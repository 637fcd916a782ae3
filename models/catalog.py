"""The model catalogue: one entry per model, the only place that lists them.

Adding a model is one module with its ``SPEC`` (a ``models.spec.ModelSpec``; see
``models.digits_mlp`` and ``models.minilm_l6``) and one line in ``_entries`` below; the contract,
the bridge, the worker and ``agentq models build`` read the catalogue.
"""

from __future__ import annotations

from collections.abc import Mapping

from models.spec import Handler, ModelSpec, Prepared

__all__ = ["CATALOG", "Handler", "ModelSpec", "Prepared", "names", "spec"]


def _entries() -> tuple[ModelSpec, ...]:
    from models import digits_mlp, minilm_l6, minilm_l6_fast, sentiment_minilm

    return (digits_mlp.SPEC, minilm_l6.SPEC, minilm_l6_fast.SPEC, sentiment_minilm.SPEC)


CATALOG: Mapping[str, ModelSpec] = {spec.name: spec for spec in _entries()}


def spec(name: str) -> ModelSpec:
    """The entry of a model; ``KeyError`` for a name the catalogue does not have."""
    return CATALOG[name]


def names() -> list[str]:
    return list(CATALOG)
