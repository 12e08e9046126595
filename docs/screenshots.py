"""Drive the plugin in a real napari window and save a screenshot of each step into docs/.

    xvfb-run -a python docs/screenshots.py        # headless
"""

from __future__ import annotations

import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

from napari_tilemap import sample_surface

HERE = Path(__file__).parent


def wait(panel, timeout: float = 300, worker: str = "worker") -> None:
    end = time.monotonic() + timeout
    while getattr(panel, worker) is not None and time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def shot(viewer, name: str) -> None:
    QApplication.processEvents()
    viewer.screenshot(str(HERE / name), canvas_only=False, flash=False)
    print("wrote", HERE / name)


def main() -> None:
    sample = sample_surface(seed=0)
    viewer = napari.Viewer(title="napari-tilemap")
    viewer.window.resize(1400, 850)
    _, w = viewer.window.add_plugin_dock_widget("napari-tilemap", "Tilemap")
    image = viewer.add_image(sample.image, name="surface")

    w.classes.image.value = image
    labels = w.classes.create_labels_layer()
    labels.data = sample.labels.copy()
    w.tabs.setCurrentWidget(w.classes.native)
    shot(viewer, "step1-paint.png")

    w.tiles.tile_size.value = 48  # the image and labels layers are chosen already: the ones just added
    w.tiles.show_tile.value = True
    w.tiles.extract.clicked()
    w.tabs.setCurrentWidget(w.tiles.native)
    shot(viewer, "step2-tiles.png")

    viewer.layers["tiles"].visible = False
    w.tiles.show_tile.value = False
    w.training.device.value = "cpu"
    w.training.prior.value = "balanced"  # the sample paints only some of its defects
    w.training.train.clicked()
    w.tabs.setCurrentWidget(w.training.native)
    wait(w.training)
    shot(viewer, "step3-train.png")

    viewer.layers.selection.active = image
    w.prediction.device.value = "cpu"
    w.prediction.contours.value = True
    labels.visible = False
    w.prediction.predict.clicked()
    w.tabs.setCurrentWidget(w.prediction.native)
    wait(w.prediction)
    shot(viewer, "step4-map.png")

    w.suggestion.device.value = "cpu"
    w.suggestion.n.value = 12
    w.suggestion.run.clicked()
    w.tabs.setCurrentWidget(w.suggestion.native)
    wait(w.suggestion)
    w.suggestion.next.clicked()
    shot(viewer, "step5-suggest.png")
    viewer.layers[w.suggestion.layer.name].visible = False
    viewer.reset_view()

    w.results.map_layer.value = viewer.layers["surface map classes"]
    w.results.threshold.value = 0.5
    w.results.min_score.value = "0.95"  # weak regions (false alarms on the texture) left out whole
    w.results.show.clicked()
    wait(w.results)
    w.results.out.value = HERE / "regions.geojson"
    w.results.overwrite.value = True
    w.results.export_button.clicked()
    wait(w.results, worker="export_worker")
    viewer.layers["surface map classes"].visible = False
    w.tabs.setCurrentWidget(w.results.native)
    shot(viewer, "step7-results.png")
    (HERE / "regions.geojson").unlink()

    fresh = sample_surface(seed=7)  # a surface training never saw, with its full truth
    for layer in viewer.layers:
        layer.visible = False
    fresh_image = viewer.add_image(fresh.image, name="fresh surface")
    truth = viewer.add_labels(fresh.truth, name="fresh truth", opacity=0.5)
    w.evaluation.image.value, w.evaluation.truth.value = fresh_image, truth
    w.evaluation.device.value = "cpu"
    w.evaluation.evaluate.clicked()
    w.tabs.setCurrentWidget(w.evaluation.native)
    wait(w.evaluation)
    shot(viewer, "step6-evaluate.png")
    viewer.close()


if __name__ == "__main__":
    main()
