"""A fresh dock, before any data: every control either does its job or says what is missing."""

from magicgui.widgets import CheckBox, FloatSlider, LineEdit, PushButton

PANELS = ("classes", "tiles", "training", "prediction", "suggestion", "evaluation", "results")


def test_every_control_of_a_fresh_dock_is_safe_to_use(dock, notifications):
    _, w = dock
    failures = []
    for name in PANELS:
        for widget in getattr(w, name):
            try:
                if isinstance(widget, PushButton) and widget.enabled:
                    widget.clicked()
                elif isinstance(widget, FloatSlider):
                    widget.value = (widget.min + widget.max) / 2
                elif isinstance(widget, CheckBox):
                    widget.value = not widget.value
                elif isinstance(widget, LineEdit):
                    widget.value = "0.5"
                    widget.native.editingFinished.emit()
            except Exception as err:  # a slider moved before any run used to raise here
                failures.append(f"{name}: {widget.label or widget.text}: {err!r}"[:300])
    assert not failures, failures
    said = " | ".join(notifications["error"])
    for missing in ("Extract tiles first", "No model: train one", "Evaluate first", "choose a map layer"):
        assert missing in said
