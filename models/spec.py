"""What a catalogue entry is: ``ModelSpec``, and the handler types workers run through it.

An entry says everything the rest of agentq needs about a model, without importing torch:
what ``input`` it takes (checked at the edge, in ``producers.contract``), how the bridge buckets
and sizes its batches, how a worker turns inputs into feeds and outputs into result columns, and
how ``agentq models build`` builds, gates and versions it (see ``models.catalog``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

# (reason code, detail): the reason codes are those of ``producers.contract.RejectReason``.
InputProblem = tuple[str, str]
Step = Callable[[str], None]
Builder = Callable[[Path, Step], dict[str, Any]]


@dataclass
class Prepared:
    """A batch's inputs as feeds, plus the items that could not be fed (they fail alone)."""

    feeds: dict[str, np.ndarray]
    ok: list[int]  # indexes of items that made it into the feeds
    errors: dict[int, str] = field(default_factory=dict)  # index -> reason text
    extras: list[dict[str, Any]] = field(default_factory=list)  # per ok item


class Handler(Protocol):
    """A worker's pre- and post-processing around the engine for one model."""

    def prepare(self, inputs: list[dict[str, Any]]) -> Prepared: ...

    def results(self, outputs: list[np.ndarray], prepared: Prepared) -> list[dict[str, Any]]:
        """Result rows: any of ``label``, ``probs``, ``embedding``, ``extra`` (``results``)."""
        ...


@dataclass(frozen=True)
class ModelSpec:
    name: str
    summary: str
    input_schema: Mapping[str, Any]  # JSON Schema of ``input`` (exported with the v1 schema)
    check_input: Callable[[dict[str, Any], Any], InputProblem | None]  # (input, Limits)
    # (artifact_dir) -> Handler. Workers pass the directory of the registered build they run
    # (``manifest.json`` and what it names, e.g. the tokenizer); None outside a worker: the
    # package defaults.
    make_handler: Callable[[Path | None], Handler]
    version: Callable[[], str]  # content hash of the build's sources and parameters
    build: Builder  # writes the variants into a directory, returns the manifest
    result_columns: tuple[str, ...]  # which ``results`` columns the model fills
    # Text models: a token counter factory (input -> tokens), built once per bridge; the bridge
    # batches jobs of similar token counts together (``bridge.buckets``).
    make_token_counter: Callable[[], Callable[[dict[str, Any]], int]] | None = None
    # Endless realistic inputs (synthetic streams, benchmarks, the demo).
    sample_inputs: Callable[[random.Random], Iterator[dict[str, Any]]] | None = None
    batch_scale: int = 1  # batches of this model are batch_scale x max_batch jobs
    # An input that is one list of numbers of a fixed width, named here, travels from the bridge
    # to the worker as one float32 matrix (``workers.packed``); the handler's ``prepare`` then
    # receives a ``PackedInputs`` and may read its ``matrix``.
    packed_input: str | None = None
    # Models whose build this one's build reads (built first by ``agentq models build``); the
    # builder finds them beside its own artifact directory (``models.artifacts.artifact_dir``).
    requires: tuple[str, ...] = ()
