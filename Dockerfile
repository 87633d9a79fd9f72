# The service as a container image (docs/container.md). Two flavours from one file:
#   RUNTIME=onnx   the exported model in ONNX Runtime, no torch in the image (the small one)
#   RUNTIME=torch  the checkpoint in PyTorch (any run under outputs/, no export needed)
# Nothing is downloaded while building: the wheels come from build/wheelhouse/<runtime>, which `make wheelhouse`
# fills on the host from requirements.lock (so the image holds the versions CI tested, and an air-gapped machine
# builds it too). `make image RUNTIME=onnx` does both steps.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# 1. the project's wheel, built from the checkout with the wheelhouse's setuptools
FROM ${BASE_IMAGE} AS build
ARG RUNTIME=onnx
COPY build/wheelhouse/${RUNTIME} /wheels
COPY pyproject.toml README.md LICENSE /src/
COPY conf /src/conf
COPY hydra_plugins /src/hydra_plugins
COPY mnist_lightning /src/mnist_lightning
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip wheel --no-cache-dir --no-index --find-links /wheels --no-deps --wheel-dir /dist /src

# 2. a virtual environment with the wheel and what it needs, from the wheelhouse only (pip compiles the
# bytecode as it installs: the image's user may not write it later)
FROM ${BASE_IMAGE} AS install
ARG RUNTIME=onnx
COPY --from=build /wheels /wheels
COPY --from=build /dist /dist
COPY container/onnx-requirements.txt /tmp/onnx-requirements.txt
# onnx: the wheel without its dependencies (torch and training's), then what serving in ONNX Runtime imports
RUN python3 -m venv /opt/venv \
    && wheel="$(ls /dist/mnist_lightning-*.whl)" \
    && if [ "$RUNTIME" = onnx ]; then \
        /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels --no-deps "$wheel" \
        && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels -r /tmp/onnx-requirements.txt; \
    elif [ "$RUNTIME" = torch ]; then \
        /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels "${wheel}[serve,postgres,mlflow]" onnxruntime; \
    else echo "RUNTIME=$RUNTIME: use onnx or torch" >&2; exit 1; fi

# 3. the image: the environment above on a clean base, run by a user without privileges
FROM ${BASE_IMAGE}
ARG RUNTIME=onnx
RUN useradd --system --uid 10001 --user-group --home-dir /app --create-home --shell /usr/sbin/nologin mnist
COPY --from=install /opt/venv /opt/venv
COPY container/entrypoint.sh /usr/local/bin/mnist-entrypoint
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MNIST_RUNTIME=${RUNTIME}
WORKDIR /app
# runs, exports, the prediction log and the service's own run folders: mount the project's outputs/ here
VOLUME ["/app/outputs"]
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["mnist-entrypoint"]
