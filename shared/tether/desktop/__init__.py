"""Desktop building blocks for the Openctrol surface and the desktop agent.

- `frames`: the Openctrol frame (the 16-byte ``OFRA`` header + JPEG), pure.
- `keys`: Windows virtual-key codes to X keysyms, pure.
- `capture`: grab an X display's monitor, encode JPEG, report whether it changed (mss, Pillow).
- `inject`: pointer, buttons, wheel, keys and Unicode text into an X display with XTEST.

Nothing here is wired to a surface or an agent; importing this package opens no display.
"""
