"""Windows virtual-key codes (what Openctrol's `key` message carries) to X keysyms.

The table is by keysym name, resolved once through `Xlib.XK` (pure tables, no display). Letters
map to the lower-case keysym and OEM punctuation to its unshifted US-layout keysym: shift state
is the client's, sent as its own Shift key or flag. Media and browser keys map to the XF86
keysyms X has for them. Codes with no X counterpart (IME, mouse buttons, OEM-specific keys)
are not in the table: `keysym(code)` answers None for them.
"""

from __future__ import annotations

from Xlib import XK

XK.load_keysym_group("xf86")

_NAMES: dict[int, str] = {
    0x03: "Cancel",
    0x08: "BackSpace",
    0x09: "Tab",
    0x0C: "Clear",
    0x0D: "Return",
    0x10: "Shift_L",  # VK_SHIFT (either side)
    0x11: "Control_L",  # VK_CONTROL
    0x12: "Alt_L",  # VK_MENU
    0x13: "Pause",
    0x14: "Caps_Lock",
    0x1B: "Escape",
    0x20: "space",
    0x21: "Prior",  # Page Up
    0x22: "Next",  # Page Down
    0x23: "End",
    0x24: "Home",
    0x25: "Left",
    0x26: "Up",
    0x27: "Right",
    0x28: "Down",
    0x29: "Select",
    0x2A: "Print",  # VK_PRINT
    0x2B: "Execute",
    0x2C: "Print",  # VK_SNAPSHOT (Print Screen)
    0x2D: "Insert",
    0x2E: "Delete",
    0x2F: "Help",
    0x5B: "Super_L",  # left Windows key
    0x5C: "Super_R",
    0x5D: "Menu",  # VK_APPS
    0x5F: "XF86_Sleep",
    0x6A: "KP_Multiply",
    0x6B: "KP_Add",
    0x6C: "KP_Separator",
    0x6D: "KP_Subtract",
    0x6E: "KP_Decimal",
    0x6F: "KP_Divide",
    0x90: "Num_Lock",
    0x91: "Scroll_Lock",
    0xA0: "Shift_L",
    0xA1: "Shift_R",
    0xA2: "Control_L",
    0xA3: "Control_R",
    0xA4: "Alt_L",
    0xA5: "Alt_R",
    0xA6: "XF86_Back",
    0xA7: "XF86_Forward",
    0xA8: "XF86_Refresh",
    0xA9: "XF86_Stop",
    0xAA: "XF86_Search",
    0xAB: "XF86_Favorites",
    0xAC: "XF86_HomePage",
    0xAD: "XF86_AudioMute",
    0xAE: "XF86_AudioLowerVolume",
    0xAF: "XF86_AudioRaiseVolume",
    0xB0: "XF86_AudioNext",
    0xB1: "XF86_AudioPrev",
    0xB2: "XF86_AudioStop",
    0xB3: "XF86_AudioPlay",
    0xB4: "XF86_Mail",
    0xB5: "XF86_AudioMedia",
    0xB6: "XF86_MyComputer",  # VK_LAUNCH_APP1
    0xB7: "XF86_Calculator",  # VK_LAUNCH_APP2
    # OEM punctuation as on a US keyboard (the unshifted symbol).
    0xBA: "semicolon",
    0xBB: "equal",
    0xBC: "comma",
    0xBD: "minus",
    0xBE: "period",
    0xBF: "slash",
    0xC0: "grave",
    0xDB: "bracketleft",
    0xDC: "backslash",
    0xDD: "bracketright",
    0xDE: "apostrophe",
    0xE2: "less",  # VK_OEM_102, the extra key of ISO keyboards
}
_NAMES.update({0x30 + d: str(d) for d in range(10)})  # digits row
_NAMES.update({0x41 + i: chr(ord("a") + i) for i in range(26)})  # letters
_NAMES.update({0x60 + d: f"KP_{d}" for d in range(10)})  # numpad digits
_NAMES.update({0x70 + n: f"F{n + 1}" for n in range(24)})  # F1..F24


def _resolve(name: str) -> int:
    ks = int(XK.string_to_keysym(name))
    if not ks:
        raise LookupError(f"no X keysym named {name!r}")
    return ks


VK_TO_KEYSYM: dict[int, int] = {vk: _resolve(name) for vk, name in sorted(_NAMES.items())}
"""Windows virtual-key code → X keysym."""

MODIFIER_FLAGS: dict[str, int] = {
    "shift": _resolve("Shift_L"),
    "ctrl": _resolve("Control_L"),
    "alt": _resolve("Alt_L"),
    "win": _resolve("Super_L"),
}
"""The keysym each of the `key`/`text` message's optional boolean flags stands for."""


def keysym(vk: object) -> int | None:
    """The X keysym for a Windows virtual-key code; None for an unknown or non-integer code."""
    if not isinstance(vk, int) or isinstance(vk, bool):
        return None
    return VK_TO_KEYSYM.get(vk)


_KEYSYM_NAMES: dict[int, str] = {}
for _attr, _value in sorted(vars(XK).items()):
    if _attr.startswith("XK_") and isinstance(_value, int):
        _KEYSYM_NAMES.setdefault(_value, _attr[3:])


def keysym_name(ks: int) -> str | None:
    """An X name of a keysym (e.g. ``"Return"``), None when `Xlib.XK` has no name for it."""
    return _KEYSYM_NAMES.get(ks)
