# Model server image: `mlops serve` (Open Inference Protocol REST + /metrics) on a slim Python base.
# Build:  docker build -t mlops-serve .                      (wheels from PyPI)
#         docker build --build-arg WHEELS=wheelhouse ...     (offline: wheels from ./wheelhouse in the context)
# Run:    docker run --read-only --tmpfs /tmp -p 8080:8080 -v "$PWD/models:/models:ro" mlops-serve
# No torch: the server runs models/model.onnx on ONNX Runtime (`serve.backend: onnx`, params.yaml), so
# only what `mlops serve` imports is installed (names below, versions pinned once in pyproject.toml).
# For a network ONNX cannot export (`serve.backend: torch`), add torch:
#         docker build --build-arg SERVE_EXTRA="torch safetensors" \
#           --build-arg PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu ...
# Size: ONNX Runtime's training/quantization/transformer tools and its C-API library (the Python binding
# does not link it), protobuf and flatbuffers (only those tools import them), numpy's tests and f2py,
# pip and setuptools are removed; serving never imports them (the build checks what it does import).
# Start-up: bytecode is compiled at build time (unchecked-hash, so mtimes don't matter): a read-only root
# can't cache .pyc files.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG WHEELS=index
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG SERVE_REQUIREMENTS="onnxruntime numpy ruamel.yaml msgspec uvicorn httptools uvloop prometheus-client fsspec"
ARG SERVE_EXTRA=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
# `wheelhouse*` may match nothing; pyproject.toml keeps the COPY valid either way
COPY pyproject.toml wheelhouse* /wheelhouse/
COPY pyproject.toml ./
RUN python3 -c 'import re, sys, tomllib; want = set(sys.argv[1].split()); \
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]; \
got = [d for d in deps if re.split(r"[=<>\[; ]", d)[0].lower() in want]; \
assert len(got) == len(want), f"serving requirements not pinned in pyproject.toml: {want}"; \
open("requirements.txt", "w").write("\n".join(got) + "\n")' "$SERVE_REQUIREMENTS $SERVE_EXTRA" \
 && python3 -m venv /opt/venv \
 && if [ "$WHEELS" = "wheelhouse" ]; then set -- --no-index --find-links /wheelhouse; else set --; fi \
 && /opt/venv/bin/pip install --no-cache-dir --no-compile "$@" -r requirements.txt \
 && /opt/venv/bin/pip uninstall --yes protobuf flatbuffers \
 && S="$(echo /opt/venv/lib/python3*/site-packages)" \
 && rm -rf "$S/onnxruntime/transformers" "$S/onnxruntime/quantization" "$S/onnxruntime/tools" \
   "$S/onnxruntime/training" "$S/onnxruntime/datasets" "$S"/onnxruntime/capi/libonnxruntime.so* \
   "$S/numpy/f2py" "$S/numpy/distutils" \
 && find "$S/numpy" -type d -name tests -prune -exec rm -rf {} +
# the package itself last: a source change does not reinstall the dependencies
COPY README.md params.yaml ./
COPY src/ src/
RUN if [ "$WHEELS" = "wheelhouse" ]; then set -- --no-index --find-links /wheelhouse; else set --; fi \
 && /opt/venv/bin/pip install --no-cache-dir --no-compile "$@" --no-deps . \
 && /opt/venv/bin/pip uninstall --yes setuptools pip \
 && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} + \
 && /opt/venv/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/venv/lib \
 && /opt/venv/bin/python -c 'import mlops.cli, mlops.serve.server, mlops.serve.worker as w, mlops.scorer; w.preload("onnx")'

FROM ${BASE_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp MLOPS_SERVE_PORT=8080
COPY --from=build /opt/venv /opt/venv
COPY params.yaml /app/params.yaml
WORKDIR /app
# the model directory (models/ of a pipeline run or `mlops fetch-model`) is mounted here, read-only is fine
VOLUME ["/models"]
# any non-root uid works; nothing in the image is written at run time (mount a tmpfs on /tmp for workers > 1)
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python3", "-c", "import os, sys, urllib.request as u; port = os.environ.get('MLOPS_SERVE_PORT', '8080'); sys.exit(0 if u.urlopen(f'http://127.0.0.1:{port}/v2/health/ready', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["mlops", "--params", "/app/params.yaml"]
CMD ["serve", "--model-dir", "/models", "--host", "0.0.0.0", "--port", "8080"]
