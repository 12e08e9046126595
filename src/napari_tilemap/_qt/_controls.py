"""Controls that several tabs share: the device choice and a read-only monospace text box."""

from __future__ import annotations

from magicgui.widgets import ComboBox, TextEdit

DEVICE_TIP = "Where the network runs: auto = CUDA, then Apple MPS, then the CPU"


def device_combo() -> ComboBox:
    """The device choice, ``auto`` first."""
    return ComboBox(label="device", choices=["auto", "cpu", "cuda", "mps"], value="auto", tooltip=DEVICE_TIP)


def read_only_text() -> TextEdit:
    """A read-only, unwrapped, monospace text box for tables of figures."""
    text = TextEdit(value="")
    native = text.native
    native.setReadOnly(True)
    native.setLineWrapMode(native.LineWrapMode.NoWrap)
    font = native.font()
    font.setFamily("monospace")
    native.setFont(font)
    return text
