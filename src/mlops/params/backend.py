"""params.backend: the serving backends, `serve.backend` (the server runs it; evaluate and the gate score on it).

One definition for both readers of that key: the server's msgspec section (`mlops.params.serve`) and the
pipeline's view of it (`mlops.params.served`). No imports, so neither pulls in the other's library.
"""

from typing import Literal

Backend = Literal["onnx", "torch"]
"""onnx: models/model.onnx on ONNX Runtime (torch never imported); torch: the safetensors weights on torch."""
