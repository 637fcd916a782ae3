"""A batch's inputs as one float32 matrix: the columnar form of inputs that are one list of numbers.

A model whose ``input`` is a single fixed-width list of numbers (``ModelSpec.packed_input``, e.g.
digits-mlp's 64 ``pixels``) travels in the Celery payload as one little-endian float32 buffer,
base64 in JSON (never pickle)::

    "packed": {"field": "pixels", "dtype": "<f4", "shape": [n, width], "b64": "..."}

instead of ``n`` JSON lists of floats: the bridge encodes a batch with one numpy conversion and
the worker feeds the matrix to the model as it is, where the JSON form cost a float repr and a
float parse per number on each side, and a numpy conversion per job in the worker. The values are
those the model would have seen anyway (its input tensor is float32; the edge refuses numbers
outside the float32 range), and the ledger keeps each job's input as it was sent.

``PackedInputs`` is a ``Sequence`` of input dicts, so every slow path (retries, isolating a bad
item, failpoints) reads it like the list it replaces; only the hot path asks for the matrix.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, overload

import numpy as np

DTYPE = "<f4"
MAX_WIDTH = 4096  # numbers per input
MAX_BYTES = 64 << 20  # decoded buffer of one batch


class PackedInputs(Sequence[dict[str, Any]]):
    def __init__(self, field: str, matrix: np.ndarray) -> None:
        if matrix.ndim != 2 or matrix.dtype != np.float32:
            raise ValueError("packed inputs must be a 2-D float32 matrix")
        self.field = field
        self.matrix = matrix

    @classmethod
    def pack(cls, field: str, inputs: Sequence[Mapping[str, Any]]) -> PackedInputs | None:
        """The matrix of ``inputs`` when each is exactly ``{field: [numbers]}`` of one width;
        None otherwise (the batch then travels as plain inputs)."""
        if not inputs:
            return None
        try:
            if any(len(inp) != 1 for inp in inputs):
                return None
            rows = [inp[field] for inp in inputs]
            width = len(rows[0])
            if not 0 < width <= MAX_WIDTH or any(len(r) != width for r in rows):
                return None
            with np.errstate(over="ignore", invalid="ignore"):
                matrix = np.array(rows, dtype=np.float32)  # inf where a number does not fit
        except (KeyError, TypeError, ValueError, OverflowError):
            return None
        if matrix.shape != (len(rows), width) or not np.isfinite(matrix).all():
            return None
        return cls(field, matrix)

    # -- the wire form -------------------------------------------------------------------------
    def to_wire(self) -> dict[str, Any]:
        buf = np.ascontiguousarray(self.matrix, dtype=DTYPE).tobytes()
        return {"field": self.field, "dtype": DTYPE, "shape": list(self.matrix.shape),
                "b64": base64.b64encode(buf).decode("ascii")}

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any], rows: int) -> PackedInputs:
        """Read a payload's ``packed`` object; ``ValueError`` for anything but a well-formed
        float32 matrix of ``rows`` rows within the limits."""
        field, shape, b64 = wire.get("field"), wire.get("shape"), wire.get("b64")
        if wire.get("dtype") != DTYPE or not isinstance(field, str) or not isinstance(b64, str):
            raise ValueError("packed inputs need field, dtype <f4 and b64")
        if (not isinstance(shape, list) or len(shape) != 2
                or not all(type(d) is int for d in shape) or shape[0] != rows
                or not 0 < shape[1] <= MAX_WIDTH):
            raise ValueError(f"packed inputs shape {shape!r} does not fit {rows} jobs")
        size = shape[0] * shape[1] * 4
        if size > MAX_BYTES or len(b64) != 4 * -(-size // 3):
            raise ValueError(f"packed inputs of {len(b64)} base64 characters for shape {shape}")
        try:
            buf = base64.b64decode(b64, validate=True)
        except binascii.Error as e:
            raise ValueError(f"packed inputs are not base64: {e}") from e
        matrix = np.frombuffer(buf, dtype=DTYPE).reshape(shape).astype(np.float32, copy=False)
        return cls(field, matrix)

    # -- a sequence of input dicts -------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.matrix.shape[0])

    @overload
    def __getitem__(self, i: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, i: slice) -> PackedInputs: ...

    def __getitem__(self, i: int | slice) -> dict[str, Any] | PackedInputs:
        if isinstance(i, slice):
            return PackedInputs(self.field, self.matrix[i])
        return {self.field: self.matrix[i].tolist()}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(len(self)))

    def take(self, indexes: Iterable[int]) -> PackedInputs:
        return PackedInputs(self.field, self.matrix[list(indexes)])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PackedInputs):
            return self.field == other.field and np.array_equal(self.matrix, other.matrix)
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]
