# syntax=docker/dockerfile:1
# The WebSocket relay on Cloud Run: `python -m tether.relay` (shared/tether/relay/__main__.py),
# listening on $PORT. It also serves the VNC viewer page and the vendored noVNC files.
#
#   docker build -f infra/docker/relay.Dockerfile -t tether-relay .      (from the repo root)

# noVNC from the npm registry, pinned by infra/novnc/package-lock.json (as `make install` does).
FROM node:20-slim AS novnc
WORKDIR /build
COPY infra/novnc/package.json infra/novnc/package-lock.json ./
RUN npm ci --no-audit --no-fund --silent

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app/shared \
    TETHER_HOME=/tmp/tether \
    PORT=8080
WORKDIR /app

COPY requirements.txt ./
RUN pip install -r requirements.txt

# The package runs from source (PYTHONPATH): its data files (viewer.html, static/) stay in place.
COPY shared/tether shared/tether
COPY --from=novnc /build/node_modules/@novnc/novnc/core shared/tether/relay/static/novnc/core
COPY --from=novnc /build/node_modules/@novnc/novnc/vendor shared/tether/relay/static/novnc/vendor
COPY --from=novnc /build/node_modules/@novnc/novnc/LICENSE.txt shared/tether/relay/static/novnc/LICENSE.txt

RUN useradd --system --uid 10001 --no-create-home tether
USER 10001
EXPOSE 8080
CMD ["python", "-m", "tether.relay"]
