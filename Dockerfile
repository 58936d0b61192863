# Qwen Image Service on Ray's GPU image: what the KubeRay manifests in deploy/kuberay/ run.
#
#   docker build -t registry.example.com/qwen-image-service:2.0.0 .
#
# The base image's Ray and Python must be the ones the project pins and is tested with, and the same
# as the RayService's rayVersion (tests/deploy/test_image.py checks all three).
ARG RAY_VERSION=2.60.0
FROM rayproject/ray:${RAY_VERSION}-py311-gpu
ARG RAY_VERSION

WORKDIR /home/ray/qwen-image

# PyTorch first, in its own layer: it is the largest download and changes least. PyPI's Linux
# wheels of torch 2.13 are CUDA 13 builds (the CUDA libraries come as nvidia-* wheels; only the
# driver is the node's, and CUDA 13 needs driver 580 or newer). For older drivers build with
# --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128. torchvision is the release made
# with this torch (the edit model's Qwen2-VL processor needs it).
ARG TORCH_INDEX=https://pypi.org/simple
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX}" "torch==2.13.0" "torchvision==0.28.0"

COPY --chown=ray pyproject.toml README.md ./
COPY --chown=ray serving ./serving
COPY --chown=ray models ./models
COPY --chown=ray auth ./auth
COPY --chown=ray storage ./storage
COPY --chown=ray web ./web
COPY --chown=ray cli ./cli
COPY --chown=ray i18n ./i18n

# The project with the PostgreSQL driver (DATABASE_URL=postgresql+psycopg://… on a cluster), the S3
# driver (RESULT_STORE_URL=s3://…) and the GPU extra (torchao, for MEMORY_MODE=fp8). Ray is held at
# the base image's version so pip never replaces the Ray the cluster runs.
RUN pip install --no-cache-dir "ray[serve]==${RAY_VERSION}" ".[postgres,gpu,s3]"
