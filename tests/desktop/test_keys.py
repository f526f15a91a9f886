"""Windows virtual-key codes to X keysyms."""

from __future__ import annotations

from tether.desktop import keys
from Xlib import XK

XK.load_keysym_group("xf86")


def test_known_mappings() -> None:
    ks = XK.string_to_keysym
    assert keys.keysym(0x41) == ks("a")  # letters: the unshifted keysym
    assert keys.keysym(0x5A) == ks("z")
    assert keys.keysym(0x30) == ks("0")
    assert keys.keysym(0x0D) == ks("Return")
    assert keys.keysym(0x11) == ks("Control_L")  # the integration's CTRL
    assert keys.keysym(0x5B) == ks("Super_L")  # and WIN
    assert keys.keysym(0xA5) == ks("Alt_R")
    assert keys.keysym(0x70) == ks("F1")
    assert keys.keysym(0x87) == ks("F24")
    assert keys.keysym(0x21) == ks("Prior")
    assert keys.keysym(0x60) == ks("KP_0")
    assert keys.keysym(0xBA) == ks("semicolon")
    assert keys.keysym(0xDE) == ks("apostrophe")
    assert keys.keysym(0xAD) == 0x1008FF12  # XF86AudioMute
    assert keys.keysym(0xAF) == 0x1008FF13  # XF86AudioRaiseVolume


def test_unknown_codes_are_none() -> None:
    for code in (0x00, 0x01, 0x07, 0xFF, 0x1000, -1, "65", None, 65.0, True):
        assert keys.keysym(code) is None


def test_every_entry_is_a_keysym_x_knows() -> None:
    assert len(keys.VK_TO_KEYSYM) > 140
    for vk, ks in keys.VK_TO_KEYSYM.items():
        name = keys.keysym_name(ks)
        assert name and XK.string_to_keysym(name) == ks, hex(vk)
