# Model server image: `mlops serve` (Open Inference Protocol REST + /metrics) on a slim Python base.
# Build:  docker build -t mlops-serve .                      (wheels from PyPI, torch from the CPU index)
#         docker build --build-arg WHEELS=wheelhouse ...     (offline: wheels from ./wheelhouse in the context)
# Run:    docker run --read-only --tmpfs /tmp -p 8080:8080 -v "$PWD/models:/models:ro" mlops-serve
# Only the serving dependencies are installed (names below, versions pinned once in pyproject.toml).
# Size: torch's compiler stack (sympy, mpmath, networkx, jinja2: torch.compile/fx only), headers, test
# binaries and test libraries are removed; serving runs eager inference and never imports them.
# Start-up: bytecode is compiled at build time (unchecked-hash, so mtimes don't matter): a read-only root
# can't cache .pyc files, and compiling torch's sources at every start costs ~2 s.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG WHEELS=index
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG SERVE_REQUIREMENTS="torch numpy safetensors pydantic pyyaml ruamel.yaml msgspec uvicorn httptools uvloop prometheus-client fsspec"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
# `wheelhouse*` may match nothing; pyproject.toml keeps the COPY valid either way
COPY pyproject.toml wheelhouse* /wheelhouse/
COPY pyproject.toml ./
RUN python3 -c 'import re, sys, tomllib; want = set(sys.argv[1].split()); \
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]; \
got = [d for d in deps if re.split(r"[=<>\[; ]", d)[0].lower() in want]; \
assert len(got) == len(want), f"serving requirements not pinned in pyproject.toml: {want}"; \
open("requirements.txt", "w").write("\n".join(got) + "\n")' "$SERVE_REQUIREMENTS" \
 && python3 -m venv /opt/venv \
 && if [ "$WHEELS" = "wheelhouse" ]; then set -- --no-index --find-links /wheelhouse; else set --; fi \
 && /opt/venv/bin/pip install --no-cache-dir --no-compile "$@" -r requirements.txt \
 && /opt/venv/bin/pip uninstall --yes sympy mpmath networkx jinja2 markupsafe \
 && T="$(echo /opt/venv/lib/python3*/site-packages/torch)" \
 && rm -rf "$T/include" "$T/test" "$T/share/cmake" \
 && find "$T/bin" -mindepth 1 ! -name torch_shm_manager -exec rm -rf {} + \
 && rm -f "$T"/lib/libjitbackend_test.so "$T"/lib/libtorchbind_test.so "$T"/lib/libbackend_with_compiler.so "$T"/lib/libaoti_custom_ops.so
# the package itself last: a source change does not reinstall the dependencies
COPY README.md params.yaml ./
COPY src/ src/
RUN if [ "$WHEELS" = "wheelhouse" ]; then set -- --no-index --find-links /wheelhouse; else set --; fi \
 && /opt/venv/bin/pip install --no-cache-dir --no-compile "$@" --no-deps . \
 && /opt/venv/bin/pip uninstall --yes pip \
 && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} + \
 && /opt/venv/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash -x '/py31[2-9]_[a-z_]*[.]py$' /opt/venv/lib

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
