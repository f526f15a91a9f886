"""The in-workspace runtime server: exec now; PTY, VNC bridge and logs build on it."""
