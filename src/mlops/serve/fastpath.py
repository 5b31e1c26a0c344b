"""fastpath: the common inference request decoded, validated and encoded in one typed pass.

Most requests have one shape: plain JSON, every feature once as an `[n]` (or `[n, 1]`) tensor of
plain values of its own datatype, within range, no `parameters` on the inputs. For those, msgspec
decodes the body straight into per-feature typed structs (a tagged union on the input's `name`), so
names, datatypes, value types, ranges and categories are checked in C while parsing; what is left
(shapes, row counts, each feature exactly once, the requested outputs among the task's) is a few comparisons per input,
and one row is encoded with Python floats instead of a dozen small numpy operations.

Everything else returns None and takes the reference path (`mlops.serve.binary.decode`, then
`mlops.serve.encoding.Encoder`), which owns every validation rule and error message: a malformed,
unusual or invalid request gets exactly the answer it always got. The contract, checked by
tests/serve/test_fastpath.py on generated feature specs and requests: the fast path accepts only what
the reference accepts, and then produces the same feature matrix and the same raw columns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import chain
from typing import Annotated, Any, Literal, Union

import msgspec
import numpy as np

from mlops.features import Preprocessor
from mlops.serve.protocol import FLOAT_TYPES, INT_TYPES, OUTPUTS, RequestOutput

FLOAT32_MAX = float(np.finfo(np.float32).max)


class Feature:
    """One raw feature as the fast encoder needs it (numeric: scaling state; categorical: one-hot index)."""

    __slots__ = ("name", "numeric", "column", "mean", "std", "median", "unsafe", "index")

    def __init__(self, name: str, numeric: bool, column: int):
        self.name, self.numeric, self.column = name, numeric, column
        self.mean = self.std = self.median = 0.0
        self.unsafe = False  # a value in range may still exceed float32 once scaled: check each one
        self.index: dict[str | None, int] = {}


def _numeric_values(spec: dict[str, Any], integer: bool) -> Any:
    """The msgspec type of one value of a numeric feature: range-checked while parsing.

    Integer bounds are the real bounds rounded inwards, so an integer accepted here is within the
    float bounds the reference compares against (its float64 conversion rounds monotonically).
    """
    lo, hi = spec.get("min"), spec.get("max")
    int_meta = msgspec.Meta(
        ge=math.ceil(lo) if lo is not None else None, le=math.floor(hi) if hi is not None else None
    )
    value: Any = Annotated[int, int_meta]
    if not integer:
        float_meta = msgspec.Meta(
            ge=float(lo) if lo is not None else None, le=float(hi) if hi is not None else None
        )
        value = Union[value, Annotated[float, float_meta]]  # noqa: UP007 - built at run time
    return value


class FastPath:
    """The typed decoder and encoder of one model's common requests."""

    def __init__(
        self, features: list[dict[str, Any]], preprocessor: Preprocessor, outputs: Sequence[str] = OUTPUTS
    ):
        """Args:
        features: model.json `features`.
        preprocessor: the fitted preprocessing state.
        outputs: the names a request may ask for (the task's, `Task.output_names`; binary's by default):
            a request naming another one takes the reference path, which reports it.
        """
        self.outputs = frozenset(outputs)
        by_name = {f["name"]: f for f in features}
        order = list(preprocessor.inputs)  # model order: numeric block, then the one-hot blocks
        if set(by_name) != set(order):
            raise ValueError("model.json features and preprocessing state name different inputs")
        self.features: list[Feature] = []
        self.numeric_nullable = False
        usable = True
        column = len(preprocessor.numeric)
        classes = []
        for slot, name in enumerate(order):
            spec = by_name[name]
            nullable = bool(spec.get("nullable", False))
            if name in preprocessor.numeric:
                f = Feature(name, True, slot)
                state = preprocessor.numeric[name]
                f.mean, f.std, f.median = float(state.mean), float(state.std), float(state.median)
                integer = spec["dtype"] == "INT64"
                value = _numeric_values(spec, integer)
                datatypes = INT_TYPES if integer else FLOAT_TYPES
                extremes = [f.median]
                extremes += [float(spec[k]) if spec.get(k) is not None else math.inf for k in ("min", "max")]
                f.unsafe = not all(abs((v - f.mean) / f.std) <= FLOAT32_MAX for v in extremes)
                self.numeric_nullable |= nullable
            else:
                f = Feature(name, False, column)
                f.index = {c: column + i for c, i in preprocessor.slots(name).items()}
                column += preprocessor.block_width(name)
                categories = tuple(c for c in f.index if c is not None)
                if not categories:  # no value is ever valid: every request takes the reference path
                    usable = False
                value = Literal[categories] if categories else None
                datatypes = frozenset({"BYTES"})
            if nullable:
                value = Union[value, None]  # noqa: UP007 - built at run time
            self.features.append(f)
            classes.append(
                msgspec.defstruct(
                    f"Input{slot}",
                    [
                        ("shape", list[int]),
                        ("datatype", Literal[tuple(sorted(datatypes))]),
                        ("data", list[value]),
                        ("parameters", None, None),
                    ],
                    tag_field="name",
                    tag=name,
                    namespace={"slot": slot},
                    gc=False,
                )
            )
        self.width = preprocessor.width
        self.n_numeric = len(preprocessor.numeric)
        self.numeric_features = self.features[: self.n_numeric]
        self.categorical_features = self.features[self.n_numeric :]
        self.any_unsafe = any(f.unsafe for f in self.numeric_features)
        self.mean = np.array([f.mean for f in self.numeric_features], dtype=np.float64)[:, None]
        self.std = np.array([f.std for f in self.numeric_features], dtype=np.float64)[:, None]
        self.median = np.array([f.median for f in self.numeric_features], dtype=np.float64)[:, None]
        self._zero_row = [0.0] * self.width
        self._scaling = [(f.column, f.mean, f.std, f.median) for f in self.numeric_features]
        self._indexes = [f.index for f in self.categorical_features]
        # by input slot (model order), for the one-row pass: scaling state, or None for a categorical...
        self._slot_scaling = [
            (f.column, f.mean, f.std, f.median) if f.numeric else None for f in self.features
        ]
        # ...and the one-hot column of each category, or None for a numeric feature
        self._slot_index = [None if f.numeric else f.index for f in self.features]
        request = msgspec.defstruct(
            "FastRequest",
            [
                ("inputs", list[Union[tuple(classes)]]),  # noqa: UP007 - built at run time
                ("id", Union[str, None], None),  # noqa: UP007
                ("parameters", Union[dict[str, Any], None], None),  # noqa: UP007
                ("outputs", Union[list[RequestOutput], None], None),  # noqa: UP007
            ],
            gc=False,
        )
        self._decode = msgspec.json.Decoder(request).decode if usable else None

    def decode(self, body: bytes) -> tuple[Any, list[Any], np.ndarray] | None:
        """(request, inputs in model order, float32 matrix rows x width), or None: use the reference path.

        The request has `id`, `parameters` and `outputs` like `protocol.InferenceRequest`.
        """
        if self._decode is None:
            return None
        try:
            request = self._decode(body)
            inputs = request.inputs
            if len(inputs) != len(self.features) or not inputs:
                return None
            for out in request.outputs or ():
                if out.name not in self.outputs:
                    return None
            rows = len(inputs[0].data)
            if rows == 1:  # the most common request, checked and encoded in one pass over its inputs
                return self._one(request, inputs)
            flat, column = [rows], [rows, 1]
            by_slot: list[Any] = [None] * len(inputs)
            for tensor in inputs:
                shape = tensor.shape
                if len(tensor.data) != rows or (shape != flat and shape != column):
                    return None
                by_slot[tensor.slot] = tensor
            if rows < 1 or None in by_slot:
                return None
            x = self._many(by_slot, rows)
        except Exception:  # noqa: BLE001 - any failure (e.g. an integer too large for FP64) is the
            return None  # reference path's to report
        return None if x is None else (request, by_slot, x)

    def _one(self, request: Any, inputs: list[Any]) -> tuple[Any, list[Any], np.ndarray] | None:
        """One row: the checks of `decode` while each value goes into a row of Python floats (the same
        float64 arithmetic as the reference's numpy), then one float32 conversion."""
        row = self._zero_row.copy()
        by_slot: list[Any] = [None] * len(inputs)
        scaling, indexes = self._slot_scaling, self._slot_index
        for tensor in inputs:
            shape, data = tensor.shape, tensor.data
            if len(data) != 1 or (shape != [1] and shape != [1, 1]):
                return None
            slot = tensor.slot
            by_slot[slot] = tensor
            index = indexes[slot]
            if index is None:
                column, mean, std, median = scaling[slot]
                v = data[0]
                row[column] = ((median if v is None else v) - mean) / std
            else:
                row[index[data[0]]] = 1.0
        if None in by_slot:  # a feature missing (and another one twice): the reference path says which
            return None
        if self.any_unsafe and not all(abs(row[f.column]) <= FLOAT32_MAX for f in self.numeric_features):
            return None
        return request, by_slot, np.array([row], dtype=np.float32)

    def _many(self, by_slot: list[Any], rows: int) -> np.ndarray | None:
        x = np.zeros((rows, self.width), dtype=np.float32)
        k = self.n_numeric
        if k:
            try:  # values straight into one flat buffer; a null (None) cannot go there
                num = np.fromiter(chain.from_iterable(t.data for t in by_slot[:k]), np.float64, k * rows)
                num = num.reshape(k, rows)
            except TypeError:
                num = np.array([t.data for t in by_slot[:k]], dtype=np.float64)  # None -> nan
            if self.numeric_nullable:
                missing = np.isnan(num)
                if missing.any():
                    num = np.where(missing, self.median, num)
            z = (num - self.mean) / self.std
            if self.any_unsafe and not (np.abs(z) <= FLOAT32_MAX).all():
                return None
            x[:, :k] = z.T
        if self._indexes:
            hot: list[int] = []  # the one-hot column of each value, feature by feature
            for tensor, index in zip(by_slot[k:], self._indexes, strict=False):
                hot += map(index.__getitem__, tensor.data)
            flat = np.array(hot, dtype=np.intp).reshape(len(self._indexes), rows)
            flat += np.arange(0, rows * self.width, self.width)  # row offsets in the flat matrix
            x.reshape(-1)[flat.reshape(-1)] = 1.0
        return x


def columns(request: Any) -> dict[str, list[Any]]:
    """The raw columns (name -> values) of an accepted request in the request's input order, as the
    reference encoder returns them (for the prediction log)."""
    return {type(t).__struct_config__.tag: t.data for t in request.inputs}
