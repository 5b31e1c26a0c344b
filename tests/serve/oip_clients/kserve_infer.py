"""Run inferences with the KServe SDK's REST client (kserve.InferenceRESTClient), in JSON and binary
modes; run by the tool virtualenv's python (toolenv.py), never imported by the project's tests.

    python kserve_infer.py REQUEST.json    # prints one JSON result per mode

REQUEST.json: {"url", "model", "features": model.json features, "rows": [{feature: value}], "modes",
and optionally "outputs": the model's output names (default: the binary task's, probability and label)}.
A mode is {"binary_inputs": bool, "binary_outputs": bool, "per_output": bool}. A result holds each
output's values (`as_numpy().tolist()`: nested for a 2-D output, BYTES decoded to text).
"""

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest
from kserve.inference_client import RESTConfig
from kserve.protocol.infer_type import RequestedOutput

NUMPY = {"BYTES": object, "INT64": np.int64, "FP64": np.float64}


async def infer(client, request: dict, mode: dict) -> dict:
    inputs = []
    for feature in request["features"]:
        values = [r[feature["name"]] for r in request["rows"]]
        if feature["dtype"] == "FP64":
            values = [np.nan if v is None else v for v in values]
        tensor = InferInput(feature["name"], [len(values)], feature["dtype"])
        tensor.set_data_from_numpy(
            np.array(values, dtype=NUMPY[feature["dtype"]]), binary_data=mode["binary_inputs"]
        )
        inputs.append(tensor)
    if mode["per_output"]:
        outputs = [
            RequestedOutput(n, {"binary_data": mode["binary_outputs"]})
            for n in request.get("outputs", ("probability", "label"))
        ]
        parameters = None
    else:
        outputs, parameters = None, {"binary_data_output": mode["binary_outputs"]}
    infer_request = InferRequest(
        request["model"], inputs, request_id="kserve-1", request_outputs=outputs, parameters=parameters
    )
    headers: dict = {}
    response = await client.infer(
        request["url"], infer_request, model_name=request["model"], response_headers=headers
    )
    result = {o.name: o.as_numpy().tolist() for o in response.outputs}
    for o in response.outputs:
        if o.datatype == "BYTES":
            result[o.name] = [v.decode() if isinstance(v, bytes) else v for v in result[o.name]]
    result["id"] = response.id
    result["binary_response"] = "inference-header-content-length" in {k.lower() for k in headers}
    return result


async def main(path: str) -> None:
    request = json.loads(open(path).read())
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    results = [await infer(client, request, mode) for mode in request["modes"]]
    print(json.dumps(results))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
