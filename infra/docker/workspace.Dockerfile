# syntax=docker/dockerfile:1
# The workspace runtime: what every workspace (a Cloud Run service or a GKE pod) runs. It serves
# exec, PTY, VNC bridge and logs on $PORT (8080) for the relay and the agents.
#
#   docker build -f infra/docker/workspace.Dockerfile -t tether-workspace .
#   docker build -f infra/docker/workspace.Dockerfile --build-arg DESKTOP=true -t tether-workspace-desktop .
#
# The home is /home/tether (uid/gid 1000), where the provisioners mount it
# (tether.provision.cloudrun / gke). A GKE pod sets its own command
# (`python -m tether.runtime --port 8080 --home /home/tether`); on Cloud Run the CMD below runs,
# and a template's main command arrives in TETHER_MAIN_COMMAND.

FROM python:3.11-slim

# DESKTOP=true adds what desktop templates (firefox-browser) run: Xvfb, x11vnc, a sound server
# (PulseAudio, and pactl for Openctrol's audio calls) and the app.
ARG DESKTOP=false
ARG DESKTOP_PACKAGES="xvfb x11vnc openbox x11-xserver-utils x11-utils xdotool pulseaudio pulseaudio-utils firefox-esr"

RUN apt-get update \
 && apt-get install -y --no-install-recommends bash ca-certificates curl git procps tini \
 && if [ "$DESKTOP" = "true" ]; then apt-get install -y --no-install-recommends $DESKTOP_PACKAGES; fi \
 && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/opt/tether \
    HOME=/home/tether \
    PORT=8080

# The runtime needs only aiohttp and pydantic, at the versions the rest of Tether pins.
COPY requirements.txt /tmp/requirements.txt
RUN pip install $(grep -E '^(aiohttp|pydantic)==' /tmp/requirements.txt) && rm /tmp/requirements.txt

COPY shared/tether /opt/tether/tether

RUN groupadd --gid 1000 tether \
 && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/tether --shell /bin/bash tether
USER 1000:1000
WORKDIR /home/tether
EXPOSE 8080

# tini reaps what shells leave behind (the runtime is not PID 1's usual job).
ENTRYPOINT ["/usr/bin/tini", "--"]
# The runtime reads the template's main command from TETHER_MAIN_COMMAND itself.
CMD ["/bin/sh", "-c", "exec python -m tether.runtime --port \"${PORT:-8080}\" --home \"$HOME\""]
