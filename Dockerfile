# The mldm-serving API with the committed models baked in.
#   docker build -t mldm-serving .
#   docker run --rm -p 8000:8000 -e MLDM_WORKERS=2 mldm-serving
# Every setting is an MLDM_* environment variable (docs/settings.md).
# Linux x86-64 only: requirements.lock pins tensorflow-cpu, which has no arm64 wheel
# (on an arm64 host: docker build --platform linux/amd64 ...).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# checkov reads `FROM ${PYTHON_IMAGE}` as an untagged image; the tag is the ARG default above.
# checkov:skip=CKV_DOCKER_7:the base image tag is pinned in the PYTHON_IMAGE ARG

# ---- builder: a virtualenv with the pinned runtime dependencies and the project ----
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies before code: this layer (TensorFlow: hundreds of MB) is rebuilt only when the lock
# changes.
# requirements.lock holds runtime dependencies only; the dev tools never enter the image.
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock

# Diet (measured with deploy/image/size-report.sh; docs/deployment.md, "Image size"): what the wheels install
# but serving never loads. tensorflow/include (~290 MB): C++ headers for building custom ops;
# libclang (~60 MB): a build-time dependency of TensorFlow's op generators, never imported at run
# time; the test suites of numpy and scipy (~75 MB); the static symbol tables of TensorFlow's two
# core libraries (752 -> 583 MB and 63 -> 51 MB): `--strip-unneeded` keeps the dynamic symbols
# that loading and linking use (what Debian does to every package). Only those two: the wheels'
# auditwheel-repaired libraries (numpy.libs/, scipy.libs/, ...) were rewritten by patchelf and
# no longer load once stripped ("ELF load command address/offset not page-aligned", measured).
# deploy/image/image-test.sh checks that every model still loads and answers after this.
# strip comes from binutils (builder stage only: nothing of it reaches the runtime image).
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/venv/lib/python3.11/site-packages
RUN pip uninstall --yes libclang \
    && rm -rf tensorflow/include numpy/*/tests numpy/tests scipy/*/tests scipy/*/*/tests \
    && strip --strip-unneeded tensorflow/libtensorflow_cc.so.2 tensorflow/libtensorflow_framework.so.2
WORKDIR /src

# The code. --no-deps: every dependency is already pinned above; --no-build-isolation: build with
# the pinned setuptools/wheel from the lock instead of fetching unpinned ones.
COPY pyproject.toml README.md ./
COPY data/ data/
COPY training/ training/
COPY service/ service/
COPY grpc_gen/ grpc_gen/
# Second diet, by measurement (docs/deployment.md, "Image size"): the image was run with
# deploy/image/usage_probe on PYTHONPATH (every imported module's file and every file mapped into
# the process, /proc/self/maps) while `deploy/image_check.py routes` and `answers` sent one request
# of every route class (all five models, energy mode=exact/auto, PNG/16-bit/palette/JPEG/EXIF
# uploads, /digits/read, V2 JSON and binary, TF Serving, .npy, gzip bodies, /docs, /demo,
# /metrics). Removed here is only what that run never imported or mapped, and what nothing kept
# reaches lazily (grep of the kept code for imports of it; readelf: no library NEEDs it):
# - the distributions networkx (17 MB: only skimage.graph), Pygments (8.6 MB: only rich's syntax highlighting
#   and tracebacks), imageio and tifffile (5 MB: only skimage.io; uploads are decoded by Pillow),
#   google-pasta (0.6 MB: only TensorFlow's tf_upgrade_v2 converter) and setuptools (6 MB, after
#   it built the project above); pip last of all;
# - TensorFlow's stablehlo_extension.so (26 MB: tf.mlir's StableHLO bindings), tf2xla's
#   _xla_ops.so (19 MB: the XLA ops are registered by libtensorflow_cc itself; nothing loads this
#   file) and lib_native_proto_caster.so (5.5 MB: loaded by nothing);
# - scipy.io and scipy.signal (13 MB: imported only by skimage.filters.window and skimage's
#   polygon approximation, which the service never calls; scipy.stats and scipy.optimize stay:
#   scipy.special and scipy.optimize reach them lazily);
# - skimage/data (7.8 MB of sample pictures), the tests inside keras, h5py, numpy and scipy that
#   the first diet's globs missed, numpy.distutils and numpy's _simd test module;
# - the static symbol tables of uvloop's loop (13.6 -> 1.6 MB) and of the three TensorFlow Python
#   bindings that `import tensorflow` maps (profiler 29.7 -> 21.3, tflite 15.2 -> 11.8,
#   pywrap_tensorflow_common 7.0 -> 5.3 MB): built by their projects, not auditwheel-patched;
# - the bytecode (__pycache__, 11 MB) of the packages of which the run imported no module at all
#   (scipy.stats, .optimize, ...; keras's jax, torch, openvino and numpy backends): the sources
#   stay, so a rare path that imports one still works (compiled in memory: the root is read-only).
# `make image-test` runs `image_check routes` against the image, so a removal that breaks a route
# fails CI; `make image-size` shows what is left.
WORKDIR /opt/venv/lib/python3.11/site-packages
RUN pip install --no-cache-dir --no-deps --no-build-isolation /src \
    && pip uninstall --yes networkx Pygments imageio tifffile google-pasta setuptools \
    && rm -f tensorflow/compiler/mlir/stablehlo/stablehlo_extension.so \
       tensorflow/compiler/tf2xla/ops/_xla_ops.so \
       tensorflow/python/framework/lib_native_proto_caster.so \
       numpy/_core/_simd.cpython-311-x86_64-linux-gnu.so \
    && rm -rf scipy/io scipy/signal skimage/data numpy/distutils h5py/tests \
    && find keras numpy scipy -depth \( -name tests -type d -exec rm -rf {} + \) -o \
       \( \( -name '*_test.py' -o -name '*_test.cpython-311.pyc' \) -delete \) \
    && find scipy/stats scipy/optimize scipy/integrate scipy/interpolate scipy/sparse/linalg \
       scipy/cluster scipy/fft scipy/_lib/cobyqa scipy/_lib/pyprima skimage/feature \
       keras/src/backend/openvino keras/src/backend/torch keras/src/backend/jax \
       keras/src/backend/numpy tensorflow/python/kernel_tests \
       -name __pycache__ -type d -prune -exec rm -rf {} + \
    && strip --strip-unneeded uvloop/loop.cpython-311-x86_64-linux-gnu.so \
       tensorflow/python/profiler/internal/_pywrap_profiler_plugin.so \
       tensorflow/lite/python/libpywrap_tflite_common.so \
       tensorflow/python/lib_pywrap_tensorflow_common.so \
    && python -m pip uninstall --yes pip
WORKDIR /src

# ---- runtime: the same slim base, the virtualenv and the models, no compilers, no dev tools ----
FROM ${PYTHON_IMAGE} AS runtime

# A fixed, unprivileged uid/gid so volume permissions are predictable.
RUN groupadd --system --gid 10001 mldm \
    && useradd --system --uid 10001 --gid mldm --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin mldm

COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# Owned by root and read-only for the service user: the process cannot alter its own models.
COPY models/ /app/models/

# MLDM_WORKERS: uvicorn worker processes (each loads every model; memory grows with it).
# MLDM_GRPC_PORT: gRPC (Open Inference Protocol, TF Serving, grpc.health.v1; docs/grpc.md).
# HOST must be 0.0.0.0 in a container (the service defaults to loopback outside one).
# No matplotlib here: it is the `train` extra, so nothing rebuilds a font cache at start.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    MLDM_MODEL_DIR=/app/models \
    HOST=0.0.0.0 \
    PORT=8000 \
    MLDM_GRPC_PORT=8081 \
    MLDM_WORKERS=1

USER 10001:10001
EXPOSE 8000 8081

# Ready means every model is loaded (503 otherwise). The slim image has no curl: urllib raises on
# any non-2xx status or connection error, so the exit code is the health verdict. The port is
# looked up in the service's own order (service/settings.py): MLDM_PORT, then PORT, then 8000.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('MLDM_PORT') or os.environ.get('PORT') or '8000'; urllib.request.urlopen('http://127.0.0.1:' + port + '/v2/health/ready', timeout=4)"]

# The service's own entry point: it reads HOST, PORT, MLDM_WORKERS and every other MLDM_* setting
# and runs uvicorn with that many worker processes. Exec form: python is PID 1 and receives SIGTERM
# itself, so requests in flight can finish before it exits.
CMD ["python", "-m", "service"]
