"""protocol: Open Inference Protocol (v2 REST) request decoding and validation, response encoding.

An inference request carries one input tensor per raw feature, named as in model.json `features`:

- `shape` is `[n]` or `[n, 1]` with the same `n >= 1` (rows) for every input;
- `data` is the flat row-major list of the `n` values (`[v1, ..., vn]`); a nested `[[v1], ..., [vn]]`
  is accepted for shape `[n, 1]`;
- `datatype`: numeric features take `INT64` (also INT8/16/32, UINT8/16/32/64) for integer features and
  `FP64` (also FP32/FP16 or any integer type) for float features; categorical features take `BYTES`
  (strings from the feature's `categories`). `null` is accepted only for nullable features.
  Numbers outside the feature's [min, max] are rejected.

Every violation raises `DataError` (HTTP 400) naming the input (field) at fault.

Outputs are the model's task's (`mlops.task.Task.output_spec`, listed in the model metadata):

- binary: `probability` (FP64 `[n]`, the positive-class probability) and `label` (BYTES `[n]`, the class
  at the model's decision threshold);
- multiclass: `probabilities` (FP64 `[n, N]`, `data` flat in row-major order, one probability per class
  in the order of the metadata's `parameters.classes`) and `label` (BYTES `[n]`, the most probable class);
- regression: `prediction` (FP64 `[n]`, the predicted value in the target's units).

`outputs` in the request may select a subset; an unknown name is a 400 naming it.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import msgspec

from mlops.errors import DataError
from mlops.task import BINARY, MULTICLASS, Task

INT_TYPES = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64"})
BINARY_OUTPUTS: tuple[dict[str, Any], ...] = tuple(Task(BINARY, "").output_spec())
"""The binary task's output spec (`Task.output_spec`): the default of the response encoders."""
OUTPUTS = tuple(o["name"] for o in BINARY_OUTPUTS)
"""The binary task's output names (`probability`, `label`): the default of the request validators."""


class RequestInput(msgspec.Struct):
    """One input tensor of an inference request."""

    name: str
    shape: list[int]
    datatype: str
    data: list[Any] | None = None  # absent when the tensor's bytes follow the JSON header (binary extension)
    parameters: dict[str, Any] | None = None


class RequestOutput(msgspec.Struct):
    """One requested output."""

    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(msgspec.Struct):
    """The inference request body."""

    inputs: list[RequestInput]
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[RequestOutput] | None = None


_decoder = msgspec.json.Decoder(InferenceRequest)
encode = msgspec.json.Encoder().encode


def decode(body: bytes) -> InferenceRequest:
    """Parse the JSON body; DataError names the JSON path at fault (e.g. `$.inputs[0].shape`).

    Every malformed body is a DataError (HTTP 400), never a 500: msgspec raises RecursionError past
    its nesting limit and UnicodeDecodeError for invalid UTF-8 inside a string, not DecodeError.
    """
    try:
        return _decoder.decode(body)
    except msgspec.ValidationError as e:
        raise DataError(f"invalid inference request: {e}") from e
    except msgspec.DecodeError as e:
        raise DataError(f"malformed JSON: {e}") from e
    except RecursionError as e:
        raise DataError("malformed JSON: arrays or objects nested too deeply") from e
    except UnicodeDecodeError as e:
        raise DataError(f"malformed JSON: a string is not valid UTF-8 ({e.reason})") from e


class FeatureSpec:
    """Structural and type rules of one raw feature, compiled from a model.json `features` entry.

    Value ranges and categories are checked by `mlops.serve.encoding.Encoder`, vectorised over rows.
    """

    __slots__ = (
        "name",
        "categorical",
        "integer",
        "nullable",
        "lo",
        "hi",
        "categories",
        "datatypes",
        "_int_types",
        "_num_types",
    )

    def __init__(self, spec: dict[str, Any]):
        self.name: str = spec["name"]
        self.categorical = spec["kind"] == "categorical"
        self.integer = spec["dtype"] == "INT64"
        self.nullable = bool(spec.get("nullable", False))
        self.lo = float(spec["min"]) if spec.get("min") is not None else -math.inf
        self.hi = float(spec["max"]) if spec.get("max") is not None else math.inf
        self.categories = list(spec.get("categories") or ())
        if self.categorical:
            self.datatypes = frozenset({"BYTES"})
        elif self.integer:
            self.datatypes = INT_TYPES
        else:
            self.datatypes = INT_TYPES | FLOAT_TYPES
        null = {type(None)} if self.nullable else set()
        self._int_types = frozenset({int} | null)
        self._num_types = frozenset({int, float} | null)

    def check(self, tensor: RequestInput) -> list[Any]:
        """Return the tensor's values as a flat list of n raw values, or raise DataError naming it."""
        name = self.name
        if tensor.datatype not in self.datatypes:
            raise DataError(
                f"input '{name}': datatype {tensor.datatype!r} not accepted "
                f"(expected one of {sorted(self.datatypes)})"
            )
        data, shape = tensor.data, tensor.shape
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 1:
            raise DataError(f"input '{name}': shape {shape} not accepted (expected [n] or [n, 1], n >= 1)")
        if len(data) != shape[0]:
            raise DataError(f"input '{name}': {len(data)} values do not match shape {shape}")
        if data and type(data[0]) is list:
            if len(shape) != 2 or any(type(v) is not list or len(v) != 1 for v in data):
                raise DataError(f"input '{name}': nested data must be [[v1], ..., [vn]] with shape [n, 1]")
            data = [v[0] for v in data]
        if not self.categorical:
            integer = self.integer or tensor.datatype in INT_TYPES
            if not set(map(type, data)) <= (self._int_types if integer else self._num_types):
                self._type_error(data, integer, tensor.datatype)
        return data

    def _type_error(self, data: list[Any], integer: bool, datatype: str) -> None:
        for v in data:
            if v is None and not self.nullable:
                raise DataError(f"input '{self.name}': null not allowed (feature is not nullable)")
            if v is not None and not (type(v) is int or (type(v) is float and not integer)):
                kind = "integers" if integer else "numbers"
                raise DataError(f"input '{self.name}': expected {kind} for datatype {datatype}, got {v!r}")


def response(
    model_name: str,
    version: str,
    request_id: str | None,
    wanted: list[RequestOutput] | None,
    *data: list[Any],
    binary: frozenset[str] = frozenset(),
    spec: tuple[dict[str, Any], ...] | list[dict[str, Any]] = BINARY_OUTPUTS,
) -> tuple[bytes, int | None]:
    """Encode the inference response for one request: (body, JSON header length or None).

    Args:
        wanted: the request's `outputs` (names already validated), or None for every output.
        data: each output's values, flat (row-major), in `spec` order: binary `(probabilities, labels)`,
            multiclass `(class probabilities of row 1, then row 2, ..., labels)`, regression `(values,)`.
        binary: the outputs to send as raw bytes after the JSON header (the binary tensor data
            extension, see `mlops.serve.binary`); the header length is None when every output is in the JSON.
        spec: the task's outputs (`Task.output_spec`), binary's by default.
    """
    by_name = {o["name"]: (o, values) for o, values in zip(spec, data, strict=True)}
    names = [o["name"] for o in spec] if wanted is None else [o.name for o in wanted]
    outputs = []
    raw: list[bytes] = []
    for name in names:
        tensor, values = by_name[name]
        datatype = tensor["datatype"]
        out: dict[str, Any] = {"name": name, "datatype": datatype, "shape": _shape(tensor, values)}
        if name in binary:
            raw.append(_raw(values, datatype))
            out["parameters"] = {"binary_data_size": len(raw[-1])}
        else:
            out["data"] = values
        outputs.append(out)
    body: dict[str, Any] = {"model_name": model_name, "model_version": version, "outputs": outputs}
    if request_id is not None:
        body["id"] = request_id
    header = encode(body)
    if not raw:
        return header, None
    return header + b"".join(raw), len(header)


def _shape(tensor: dict[str, Any], values: list[Any]) -> list[int]:
    """The shape of one output's flat values: `[n]`, or `[n, N]` for an output declared `[-1, N]`."""
    if len(tensor["shape"]) == 1:
        return [len(values)]
    width = tensor["shape"][1]
    return [len(values) // width, width]


class ResponseTemplate:
    """`response` for the usual request (every output, all in JSON) with the constant parts encoded once:
    the same bytes, without building the dictionaries per request."""

    def __init__(
        self,
        model_name: str,
        version: str,
        spec: tuple[dict[str, Any], ...] | list[dict[str, Any]] = BINARY_OUTPUTS,
    ):
        """Args:
        spec: the task's outputs (`Task.output_spec`), binary's by default: one or two outputs, each with
            one row per request row (`[-1]` or `[-1, N]`, N constant).
        """
        if not 1 <= len(spec) <= 2 or any(t["shape"][0] != -1 for t in spec):
            raise ValueError(f"ResponseTemplate: outputs {spec} are not one or two tensors of [rows, ...]")
        pieces = []
        for tensor in spec:
            width = b"".join(b",%d" % d for d in tensor["shape"][1:])  # rows go in per request
            pieces.append(
                b'{"name":%s,"datatype":%s,"shape":[%%d%s],"data":%%s}'
                % (encode(tensor["name"]), encode(tensor["datatype"]), width)
            )
        self._head = b'{"model_name":%s,"model_version":%s,"outputs":[' % (
            encode(model_name),
            encode(version),
        )
        self._format = b"%s" + b",".join(pieces) + b"]%s"  # the head goes in as a value: names may hold %

    def encode(self, request_id: str | None, *data: list[Any]) -> bytes:
        """The response body for each output's flat values (in the spec's order, as `response` takes
        them) and the request's id, if any."""
        tail = b"}" if request_id is None else b',"id":%s}' % encode(request_id)
        if len(data) == 2:  # classification: the model's output, then one label per row
            values, labels = data
            n = len(labels)
            return self._format % (self._head, n, encode(values), n, encode(labels), tail)
        (values,) = data
        return self._format % (self._head, len(values), encode(values), tail)


def _raw(values: list[Any], datatype: str) -> bytes:
    """One output tensor's bytes: little-endian FP64, or BYTES as 4-byte length + UTF-8 per element."""
    if datatype == "BYTES":
        parts = [v.encode("utf-8") for v in values]
        return b"".join(len(p).to_bytes(4, "little") + p for p in parts)
    return struct.pack(f"<{len(values)}d", *values)


def model_metadata(meta: dict[str, Any], version: str) -> dict[str, Any]:
    """The OIP model metadata response: one input tensor per raw feature, the task's outputs.

    `parameters`: binary `classes`, `positive_class`, `decision_threshold`; multiclass `classes` (the
    order of the columns of `probabilities`); regression `target` (the predicted column); and `sha256`.
    """
    task = Task.from_metadata(meta)
    inputs = [{"name": f["name"], "datatype": f["dtype"], "shape": [-1]} for f in meta["features"]]
    if task.kind == BINARY:
        parameters: dict[str, Any] = {
            "classes": meta["label"]["classes"],
            "positive_class": meta["label"]["positive"],
            "decision_threshold": meta["decision_threshold"],
        }
    elif task.kind == MULTICLASS:
        parameters = {"classes": list(task.classes)}
    else:
        parameters = {"target": task.column}
    parameters["sha256"] = meta["weights"]["sha256"]
    return {
        "name": meta["name"],
        "versions": [version],
        "platform": "pytorch_safetensors",
        "inputs": inputs,
        "outputs": task.output_spec(),
        "parameters": parameters,
    }
