# The training image: visionloop with ultralytics, torch and the full MLflow.
#
#   docker build -f docker/train.Dockerfile -t visionloop-train .                        # CPU torch
#   docker build -f docker/train.Dockerfile --build-arg TORCH=cuda -t visionloop-train:cuda .
#   docker run --gpus all -v vl-home:/var/lib/visionloop visionloop-train:cuda train --data shapes@latest --device 0
#
# TORCH=cpu takes torch and torchvision from download.pytorch.org/whl/cpu (about 0.7 GB);
# TORCH=cuda takes PyPI's default wheels, which carry their CUDA libraries (about 5.5 GB) and need
# only the NVIDIA driver and container toolkit on the host. Wheels in docker/wheelhouse win over
# both and are installed with --no-index: with a local BASE the build needs no network.
# BASE needs python3 >= 3.10 with venv; OpenCV's libGL and glib are installed with apt when missing.
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
ARG TORCH=cpu
ARG EXTRAS=train,s3
COPY docker/wheelhouse/ /wheels/
COPY pyproject.toml README.md constraints.txt /src/
COPY src/ /src/src/
RUN set -eu; \
    pip="/opt/visionloop/bin/pip install --no-cache-dir --disable-pip-version-check -c /src/constraints.txt"; \
    python3 -m venv /opt/visionloop; \
    if ls /wheels/*.whl >/dev/null 2>&1; then \
        $pip --no-index --find-links /wheels "/src[${EXTRAS}]"; \
    else \
        case "$TORCH" in \
            cpu) $pip --index-url https://download.pytorch.org/whl/cpu torch torchvision ;; \
            cuda) ;; \
            *) echo "TORCH must be cpu or cuda, not $TORCH" >&2; exit 2 ;; \
        esac; \
        $pip "/src[${EXTRAS}]"; \
    fi

FROM ${BASE}
RUN if ! ldconfig -p | grep -q 'libGL.so.1 ' || ! ldconfig -p | grep -q 'libglib-2.0.so.0 '; then \
        apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
        && rm -rf /var/lib/apt/lists/*; \
    fi
COPY --from=build /opt/visionloop /opt/visionloop
RUN echo "visionloop:x:10001:10001:visionloop:/var/lib/visionloop:/usr/sbin/nologin" >> /etc/passwd \
 && echo "visionloop:x:10001:" >> /etc/group \
 && mkdir -p /var/lib/visionloop \
 && chown 10001:10001 /var/lib/visionloop
ENV PATH=/opt/visionloop/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/visionloop \
    VISIONLOOP_HOME=/var/lib/visionloop \
    YOLO_CONFIG_DIR=/var/lib/visionloop/ultralytics \
    YOLO_OFFLINE=1
USER 10001:10001
WORKDIR /var/lib/visionloop
VOLUME ["/var/lib/visionloop"]
ENTRYPOINT ["visionloop"]
CMD ["--help"]
