"""binary: the binary tensor data extension of the Open Inference Protocol (as Triton defines it).

Request: with an `Inference-Header-Content-Length: L` header, the body is an L-byte JSON inference
request followed by the raw bytes of every input whose `parameters.binary_data_size` is set, in the
order of those inputs. Numbers are little-endian in their datatype's width (INT64 and FP64: 8 bytes,
FP32: 4, ...); a BYTES element is a 4-byte little-endian length followed by that many bytes (UTF-8
text here). A NaN in a binary FP tensor is a missing value (JSON `null`); infinities are rejected. The
decoded values become the tensor's `data`, so every rule and error message of JSON requests applies.

Response: an output asked for in binary (`parameters.binary_data_output: true` on the request, or
`parameters.binary_data: true` on a requested output, which wins) carries
`parameters.binary_data_size` instead of `data`; the bytes follow the JSON header in output order, and
the response has `Inference-Header-Content-Length` and `Content-Type: application/octet-stream`.
An output's bytes are its flat `data` (row-major: multiclass `probabilities` [n, N] is n * N FP64 values,
row after row).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mlops.errors import DataError
from mlops.serve.protocol import OUTPUTS, InferenceRequest, RequestInput
from mlops.serve.protocol import decode as protocol_decode

HEADER = b"inference-header-content-length"
DTYPES = {
    "BOOL": "|b1",
    "INT8": "|i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "|u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}


def split(body: bytes, header_length: bytes) -> tuple[bytes, memoryview]:
    """Split a body at `Inference-Header-Content-Length`: (JSON header, raw tensor bytes).

    Raises:
        DataError: the header is not a byte count or points past the end of the body.
    """
    text = header_length.decode("latin-1").strip()
    if not (0 < len(text) <= 18 and all("0" <= c <= "9" for c in text)):
        raise DataError(f"Inference-Header-Content-Length: {text!r} is not a byte count")
    size = int(text)
    if size > len(body):
        raise DataError(f"Inference-Header-Content-Length: {size} is more than the {len(body)}-byte body")
    return body[:size], memoryview(body)[size:]


def decode(body: bytes, header_length: bytes | None) -> InferenceRequest:
    """A request body -> the decoded request with every input's values in place: plain JSON, or (with
    `Inference-Header-Content-Length`) a JSON header followed by raw tensor bytes.

    Raises:
        DataError: malformed JSON, header length or binary data (HTTP 400).
    """
    if header_length is None:
        request = protocol_decode(body)
        attach(request, None)
    else:
        header, raw = split(body, header_length)
        request = protocol_decode(header)
        attach(request, raw)
    return request


def attach(request: InferenceRequest, raw: memoryview | None) -> None:
    """Give every input its `data`: decoded from `raw` where `parameters.binary_data_size` says so.

    Args:
        request: the decoded JSON (header) of the request; its inputs are completed in place.
        raw: the bytes after the JSON header, or None for a request without the binary extension.

    Raises:
        DataError: naming the input (or the header) whose data is missing, short, left over or invalid.
    """
    offset = 0
    for tensor in request.inputs:
        size = None if tensor.parameters is None else tensor.parameters.get("binary_data_size")
        if size is None:
            if tensor.data is None:
                raise DataError(
                    f"input '{tensor.name}': missing `data` "
                    "(or `parameters.binary_data_size` with the binary tensor data extension)"
                )
            continue
        if raw is None:
            raise DataError(
                f"input '{tensor.name}': parameters.binary_data_size needs the binary tensor data "
                "extension (an Inference-Header-Content-Length header)"
            )
        if type(size) is not int or size < 0:
            raise DataError(
                f"input '{tensor.name}': parameters.binary_data_size must be a byte count, got {size!r}"
            )
        if tensor.data is not None:
            raise DataError(f"input '{tensor.name}': both `data` and parameters.binary_data_size given")
        if offset + size > len(raw):
            raise DataError(
                f"input '{tensor.name}': parameters.binary_data_size {size} runs past the end of the body "
                f"({len(raw) - offset} bytes left after the JSON header and the inputs before it)"
            )
        tensor.data = _values(tensor, raw[offset : offset + size])
        offset += size
    if raw is not None and offset != len(raw):
        raise DataError(
            f"Inference-Header-Content-Length: {len(raw) - offset} bytes after the JSON header belong to no "
            f"input (the inputs' parameters.binary_data_size add up to {offset} of {len(raw)})"
        )


def _values(tensor: RequestInput, chunk: memoryview) -> list[Any]:
    name, datatype = tensor.name, tensor.datatype
    if datatype == "BYTES":
        return _strings(name, chunk)
    dtype = DTYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise DataError(f"input '{name}': datatype {datatype!r} is not an OIP tensor datatype")
    width = np.dtype(dtype).itemsize
    if len(chunk) % width:
        raise DataError(
            f"input '{name}': {len(chunk)} bytes are not a whole number of {datatype} values ({width} bytes each)"
        )
    array = np.frombuffer(chunk, dtype=dtype)
    if array.dtype.kind != "f":
        return array.tolist()
    if np.isinf(array).any():
        raise DataError(f"input '{name}': {datatype} values must be finite numbers (NaN means missing)")
    values = array.astype(np.float64).tolist()
    if np.isnan(array).any():
        values = [None if v != v else v for v in values]
    return values


def _strings(name: str, chunk: memoryview) -> list[str]:
    """BYTES elements: each a 4-byte little-endian length, then that many UTF-8 bytes."""
    items: list[str] = []
    pos, end = 0, len(chunk)
    while pos < end:
        if pos + 4 > end:
            raise DataError(
                f"input '{name}': BYTES element {len(items)} has a truncated 4-byte length prefix"
            )
        size = int.from_bytes(chunk[pos : pos + 4], "little")
        pos += 4
        if pos + size > end:
            raise DataError(
                f"input '{name}': BYTES element {len(items)} declares {size} bytes, only {end - pos} are left"
            )
        try:
            items.append(bytes(chunk[pos : pos + size]).decode("utf-8"))
        except UnicodeDecodeError as e:
            raise DataError(
                f"input '{name}': BYTES element {len(items)} is not valid UTF-8 ({e.reason})"
            ) from e
        pos += size
    return items


def outputs(request: InferenceRequest, names: Sequence[str] = OUTPUTS) -> frozenset[str]:
    """The names of the outputs to send in binary (Triton's request and per-output parameters).

    Args:
        request: the decoded request.
        names: every output the model serves (`Task.output_names`; binary's by default), sent in binary
            when the request asks for all of them that way.
    """
    default = _flag(request.parameters, "binary_data_output", "parameters.binary_data_output")
    if request.outputs is None:
        return frozenset(names) if default else frozenset()
    chosen = set()
    for out in request.outputs:
        flag = _flag(out.parameters, "binary_data", f"output '{out.name}': parameters.binary_data")
        if default if flag is None else flag:
            chosen.add(out.name)
    return frozenset(chosen)


def _flag(parameters: dict[str, Any] | None, key: str, field: str) -> bool | None:
    value = None if parameters is None else parameters.get(key)
    if value is not None and type(value) is not bool:
        raise DataError(f"{field} must be true or false, got {value!r}")
    return value
