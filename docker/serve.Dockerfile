# The serving image: visionloop with the `serve` extra (onnxruntime, FastAPI, uvicorn, the MLflow
# client for registry refs). No torch, no ultralytics. Runs as a non-root user and with a
# read-only root filesystem: state lives in the /var/lib/visionloop volume, temp files in /tmp.
#
#   docker build -f docker/serve.Dockerfile -t visionloop-serve .
#   docker run --read-only --tmpfs /tmp -p 127.0.0.1:8000:8000 -v $PWD/models:/models:ro \
#       -e VISIONLOOP_MODEL=/models/model.onnx visionloop-serve
#
# Build arguments: BASE (any image with python3 >= 3.10 and its venv module), EXTRAS (e.g.
# serve,s3 for an S3/MinIO store). Wheels in docker/wheelhouse are installed with --no-index, so
# with a local BASE the build needs no network (`python docker/build.py serve --offline`).
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
ARG EXTRAS=serve
COPY docker/wheelhouse/ /wheels/
COPY pyproject.toml README.md constraints.txt /src/
COPY src/ /src/src/
RUN set -eu; \
    if ls /wheels/*.whl >/dev/null 2>&1; then index="--no-index --find-links /wheels"; else index=""; fi; \
    python3 -m venv /opt/visionloop; \
    /opt/visionloop/bin/pip install --no-cache-dir --disable-pip-version-check $index \
        -c /src/constraints.txt "/src[${EXTRAS}]"; \
    /opt/visionloop/bin/pip uninstall -y -q setuptools wheel 2>/dev/null || true; \
    /opt/visionloop/bin/python -c "import importlib.util as u, sys; bad = [m for m in ('torch', 'ultralytics') if u.find_spec(m)]; sys.exit(f'not for the serving image: {bad}' if bad else 0)"

FROM ${BASE}
COPY --from=build /opt/visionloop /opt/visionloop
# a passwd entry, not useradd: minimal bases have no shadow tools
RUN echo "visionloop:x:10001:10001:visionloop:/var/lib/visionloop:/usr/sbin/nologin" >> /etc/passwd \
 && echo "visionloop:x:10001:" >> /etc/group \
 && mkdir -p /var/lib/visionloop /models \
 && chown 10001:10001 /var/lib/visionloop
ENV PATH=/opt/visionloop/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/var/lib/visionloop \
    VISIONLOOP_HOME=/var/lib/visionloop \
    VISIONLOOP_HOST=0.0.0.0 \
    VISIONLOOP_PORT=8000
USER 10001:10001
WORKDIR /var/lib/visionloop
VOLUME ["/var/lib/visionloop"]
EXPOSE 8000
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/ready' % os.environ.get('VISIONLOOP_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["visionloop"]
CMD ["serve"]
