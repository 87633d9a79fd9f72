#!/bin/sh
# The image's command: the service on every interface of the container, port 8000 (what EXPOSE and the health
# check say), with the runtime the image was built for. MODEL_REF (best, latest, registry:NAME@ALIAS,
# registry:NAME/VERSION) picks the model under the mounted /app/outputs; arguments are more Hydra overrides
# (ckpt_path=..., workers=2, ...). exec: the service is PID 1, so `docker stop`'s SIGTERM reaches uvicorn, which
# finishes the requests under way and exits.
set -eu
for argument in "$@"; do
  case "$argument" in
    host=* | port=* | runtime=*)
      echo "$argument: the image serves on 0.0.0.0:8000 with runtime=$MNIST_RUNTIME; publish another port with" \
        "docker run -p HOST_PORT:8000, or build the other flavour (make image RUNTIME=...)" >&2
      exit 2
      ;;
  esac
done
if [ ! -w /app/outputs ]; then
  echo "/app/outputs is not writable by uid $(id -u): mount the project's outputs/ there and give it to that" \
    "user (chown -R 10001 outputs), or run as its owner (docker run --user \"\$(id -u):\$(id -g)\")" >&2
  exit 2
fi
if [ -n "${MODEL_REF:-}" ]; then
  set -- "model_ref=$MODEL_REF" "$@"
fi
exec mnist-serve host=0.0.0.0 port=8000 "runtime=$MNIST_RUNTIME" "$@"
