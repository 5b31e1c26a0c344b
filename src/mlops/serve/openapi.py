"""openapi: the OpenAPI 3 document the server publishes at /openapi.json.

It follows the Open Inference Protocol REST spec, specialised to the loaded model: the input names,
datatypes and categories come from model.json, and the outputs (their names, datatypes and shapes) from
its task (`mlops.task.Task.output_spec`), so API fuzzers (schemathesis) and clients see the real
contract. Built once at start-up.
"""

from __future__ import annotations

from typing import Any

import msgspec

from mlops.task import Task

ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}


def _responses(ok: dict[str, Any], *codes: str) -> dict[str, Any]:
    reasons = {
        "400": "invalid request (the message names the field)",
        "404": "unknown model or version",
        "405": "method not allowed",
        "413": "body over serve.max_body_bytes",
        "415": "content-type other than application/json, application/octet-stream or none",
        "503": "model not ready or server overloaded",
    }
    out = {"200": {"description": "OK", "content": {"application/json": {"schema": ok}}}}
    for code in codes:
        out[code] = {"description": reasons[code], "content": {"application/json": {"schema": ERROR}}}
    return out


def _input_schema(feature: dict[str, Any]) -> dict[str, Any]:
    if feature["kind"] == "categorical":
        value: dict[str, Any] = {"type": "string", "enum": feature["categories"]}
        datatype = ["BYTES"]
    else:
        value = {"type": "integer" if feature["dtype"] == "INT64" else "number"}
        if feature.get("min") is not None:
            value["minimum"] = feature["min"]
        if feature.get("max") is not None:
            value["maximum"] = feature["max"]
        datatype = [feature["dtype"]]
    if feature.get("nullable"):
        value["nullable"] = True
    return {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"type": "string", "enum": [feature["name"]]},
            "shape": {
                "type": "array",
                "items": {"type": "integer", "minimum": 1},
                "minItems": 1,
                "maxItems": 2,
            },
            "datatype": {"type": "string", "enum": datatype},
            "data": {"type": "array", "items": value, "minItems": 1},
            "parameters": {"type": "object"},
        },
    }


def _output_schema(output: dict[str, Any]) -> dict[str, Any]:
    """One output tensor of a JSON inference response (an entry of `Task.output_spec`)."""
    value = {"type": "string"} if output["datatype"] == "BYTES" else {"type": "number"}
    return {
        "type": "object",
        "required": ["name", "datatype", "shape", "data"],
        "properties": {
            "name": {"type": "string", "enum": [output["name"]]},
            "datatype": {"type": "string", "enum": [output["datatype"]]},
            "shape": {
                "type": "array",
                "items": {"type": "integer", "minimum": 0},
                "minItems": len(output["shape"]),
                "maxItems": len(output["shape"]),
            },
            "data": {"type": "array", "items": value},  # flat, row-major
            "parameters": {"type": "object"},
        },
    }


def document(meta: dict[str, Any], version: str) -> bytes:
    """Return the OpenAPI document for the model described by `meta` (model.json)."""
    task = Task.from_metadata(meta)
    tensor = {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
        },
    }
    infer_request = {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "inputs": {"type": "array", "items": {"oneOf": [_input_schema(f) for f in meta["features"]]}},
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string", "enum": list(task.output_names())}},
                },
            },
        },
    }
    infer_response = {
        "type": "object",
        "required": ["model_name", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "outputs": {
                "type": "array",
                "items": {"oneOf": [_output_schema(o) for o in task.output_spec()]},
            },
        },
    }
    model_meta = {
        "type": "object",
        "required": ["name", "platform", "inputs", "outputs"],
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": tensor},
            "outputs": {"type": "array", "items": tensor},
        },
    }
    name_param = {
        "name": "model_name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "example": meta["name"]},
    }
    version_param = {
        "name": "model_version",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "example": version},
    }
    paths: dict[str, Any] = {
        "/v2/health/live": {
            "get": {
                "summary": "Server live",
                "responses": _responses({"type": "object", "properties": {"live": {"type": "boolean"}}}),
            }
        },
        "/v2/health/ready": {
            "get": {
                "summary": "Server ready",
                "responses": _responses(
                    {"type": "object", "properties": {"ready": {"type": "boolean"}}}, "503"
                ),
            }
        },
        "/v2": {
            "get": {
                "summary": "Server metadata",
                "responses": _responses({"type": "object", "required": ["name", "version", "extensions"]}),
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "text exposition",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }
    infer_responses = _responses(infer_response, "400", "404", "413", "415", "503")
    infer_responses["200"]["content"]["application/octet-stream"] = {
        "schema": {"type": "string", "format": "binary"}
    }
    for prefix, params in (
        ("/v2/models/{model_name}", [name_param]),
        ("/v2/models/{model_name}/versions/{model_version}", [name_param, version_param]),
    ):
        paths[prefix] = {
            "parameters": params,
            "get": {"summary": "Model metadata", "responses": _responses(model_meta, "404", "503")},
        }
        paths[prefix + "/ready"] = {
            "parameters": params,
            "get": {
                "summary": "Model ready",
                "responses": _responses(
                    {
                        "type": "object",
                        "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
                    },
                    "404",
                    "503",
                ),
            },
        }
        paths[prefix + "/infer"] = {
            "parameters": params,
            "post": {
                "summary": "Inference",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": infer_request},
                        # binary tensor data extension: JSON header (Inference-Header-Content-Length) + bytes
                        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                    },
                },
                "responses": infer_responses,
            },
        }
    doc = {
        "openapi": "3.0.3",
        "info": {"title": f"{meta['name']} (Open Inference Protocol v2 REST)", "version": version},
        "paths": paths,
    }
    return msgspec.json.encode(doc)
