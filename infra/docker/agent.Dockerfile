# syntax=docker/dockerfile:1
# A Tether agent, `python -m tether.agent`; TETHER_PLATFORM picks what it is: `cloud_run` is an
# HTTP receiver of Pub/Sub pushes on $PORT, `gke` pulls its subscription, `cluster` (Kubently's)
# pulls its subscription and runs kubectl with its pod's read-only ServiceAccount (the same
# image):
#
#   docker build -f infra/docker/agent.Dockerfile -t tether-agent .

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

# kubectl for the `cluster` platform, from the Kubernetes project's own image (pinned).
COPY --from=registry.k8s.io/kubectl:v1.32.4 /bin/kubectl /usr/local/bin/kubectl

COPY shared/tether shared/tether

RUN useradd --system --uid 10001 --no-create-home tether
USER 10001
EXPOSE 8080
CMD ["python", "-m", "tether.agent"]
