"""Where a workspace keeps what its runtime and the agent share, relative to its home. Its own
module so that the runtime, which starts in every workspace, imports no models."""

# Where a desktop workspace's VNC server listens (relative: an absolute path can pass the 108
# bytes AF_UNIX allows).
VNC_SOCKET = ".tether/vnc.sock"
# A desktop workspace's sound server's socket, under its home (`desktop_command` starts it,
# `tether.desktop.pactl` reaches it).
PULSE_SOCKET = ".tether/pulse"
