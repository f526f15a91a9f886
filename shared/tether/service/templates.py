"""The template catalog: shipped defaults seeded on first start, looked up by name."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from tether.core.layout import PULSE_SOCKET
from tether.core.lifecycle import LIVE_SESSION_STATES
from tether.core.models import VNC_SOCKET, Template, Vnc, utcnow
from tether.core.ports import Filter, Store
from tether.errors import Conflict, NotFound
from tether.service.recent import Recent
from tether.service.repo import Repo


def desktop_command(vnc: Vnc, app: str) -> str:
    """A shell script running `app` on a virtual display of the VNC settings' size, with a
    window manager (openbox: windows get title bars and can be moved, resized and closed),
    shared by a VNC server on the Unix socket ~/{VNC_SOCKET} (the runtime's /vnc bridge
    connects there). The display's number is written to ~/.tether/display once it accepts
    clients."""
    return f"""\
# -displayfd picks a free display; -noreset keeps it (and its background) when the last
# client leaves. No TCP or abstract sockets: the X socket stays in the
# workspace's private /tmp, out of reach of other workspaces (they share the network).
mkdir -p ~/.tether && rm -f ~/.tether/display
Xvfb -displayfd 3 -screen 0 {vnc.resolution}x{vnc.color_depth} \\
    -nolisten tcp -nolisten local -noreset 3>~/.tether/display &
xvfb=$!
trap 'kill $xvfb 2>/dev/null' EXIT
until [ -s ~/.tether/display ]; do
    kill -0 $xvfb 2>/dev/null || {{ echo "Xvfb exited" >&2; exit 1; }}
    sleep 0.1
done
export DISPLAY=:$(cat ~/.tether/display)
echo "display $DISPLAY ready"
cd ~ && rm -f {VNC_SOCKET}
x11vnc -display "$DISPLAY" -unixsock {VNC_SOCKET} -rfbport 0 -forever -shared -nopw \
    -quiet -noxdamage >/dev/null 2>&1 &
# Windows open maximized: the app fills the screen, which the viewer scales to its window.
maximized='<application class="*" type="normal"><maximized>yes</maximized></application>'
mkdir -p ~/.config/openbox
[ -e ~/.config/openbox/rc.xml ] || sed "s|<applications>|&$maximized|" \
    /etc/xdg/openbox/rc.xml >~/.config/openbox/rc.xml 2>/dev/null
openbox >/dev/null 2>&1 &
# A sound server of its own, so its applications have a device to play on and Openctrol's
# audio calls something to set: a null sink, on a socket in the home (no shared memory:
# the sandbox's /dev/shm is its own too).
if command -v pulseaudio >/dev/null; then
    pulseaudio -n --daemonize=no --exit-idle-time=-1 --use-pid-file=no --disable-shm=yes \
        -L "module-native-protocol-unix socket=$HOME/{PULSE_SOCKET}" \
        -L "module-null-sink sink_name=speakers sink_properties=device.description=Speakers" \
        >/dev/null 2>&1 &
    export PULSE_SERVER="unix:$HOME/{PULSE_SOCKET}"
fi
{app}
"""


FIREFOX_VNC = Vnc(enabled=True, port=5900, resolution="1280x800")
# Firefox with its toolbar and address bar, and no first-run pages (they need the internet).
FIREFOX = """\
profile=~/.mozilla/tether && mkdir -p $profile
printf 'user_pref("%s", %s);\\n' datareporting.policy.firstRunURL '""' \\
    browser.aboutwelcome.enabled false browser.startup.homepage_override.mstone '"ignore"' \\
    datareporting.policy.dataSubmissionEnabled false >$profile/user.js
xsetroot -solid '#3c4043'
exec firefox-esr --no-remote --profile $profile about:blank"""

DEFAULT_TEMPLATES = (
    Template(
        name="python",
        display_name="Python",
        description="A Python 3.11 workspace",
        category="development",
        image="python:3.11-slim",
        network="egress",  # pip install
    ),
    Template(
        name="shell",
        display_name="Shell",
        description="A plain shell workspace",
        category="development",
        image="debian:bookworm-slim",
    ),
    Template(
        name="firefox-browser",
        display_name="Firefox Web Browser",
        description="Mozilla Firefox web browser with privacy extensions",
        category="Web Browsers",
        image="lscr.io/linuxserver/firefox:latest",
        command=desktop_command(FIREFOX_VNC, FIREFOX),
        env={"PUID": "1000", "PGID": "1000", "TZ": "UTC"},
        vnc=FIREFOX_VNC,
        network="egress",  # a browser
        resources={"memory": "2Gi", "cpu": "1000m"},
        persistent_home=True,
        idle_timeout="30m",
        tags=["browser", "web", "privacy"],
    ),
)


@dataclass
class Templates:
    store: Store

    def __post_init__(self) -> None:
        self.repo = Repo(self.store, "templates", Template)
        self.recent: Recent[Template | None] = Recent()

    def seed(self) -> None:
        for template in DEFAULT_TEMPLATES:
            if self.repo.find(template.name) is None:
                with contextlib.suppress(Conflict):  # seeded concurrently by another instance
                    self.repo.create(template.name, template.model_copy())

    def get(self, name: str) -> Template:
        """The template (as read within the last moment: `Recent`)."""
        template = self.recent.get(name, lambda: self.repo.find(name))
        if template is None:
            raise NotFound(
                f"Template '{name}' does not exist", field="template", code="TEMPLATE_NOT_FOUND"
            )
        return template

    def list(self) -> list[Template]:
        return self.repo.query(order_by="name")

    def create(self, template: Template) -> Template:
        try:
            return self.repo.create(template.name, template)
        except Conflict:
            raise Conflict(
                f"Template '{template.name}' already exists", field="name", code="TEMPLATE_EXISTS"
            ) from None
        finally:
            self.recent.forget(template.name)  # read as missing a moment ago, say

    def replace(self, template: Template) -> Template:
        """Replace a template; sessions already started keep what they were started with."""
        self.get(template.name)

        def swap(old: Template) -> Template:
            return template.model_copy(
                update={
                    "created_at": old.created_at,
                    "updated_at": utcnow(),
                    "version": old.version,
                }
            )

        try:
            return self.repo.mutate(template.name, swap)
        finally:
            self.recent.forget(template.name)

    def delete(self, name: str) -> None:
        """Remove a template; refused (Conflict) while a live session uses it (anything not
        terminated: a hibernated one wakes from its template)."""
        self.get(name)
        live = [s.value for s in LIVE_SESSION_STATES]
        where: list[Filter] = [("template", "==", name), ("state", "in", live)]
        found = self.store.query("sessions", where, limit=1)
        if found:
            raise Conflict(
                f"Template '{name}' is used by live sessions (session {found[0].id}, "
                f"{found[0].data.get('state')}): terminate them before deleting it",
                field="name",
                code="TEMPLATE_IN_USE",
            )
        self.repo.delete(name)
        self.recent.forget(name)
