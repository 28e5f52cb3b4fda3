"""Open napari, the simulated sample pair and a model folder (through the plugin's reader),
predict with the widget and save a screenshot of the whole window.

    xvfb-run -a python tests/napari_screenshot.py MODEL OUT.png

Run by ``test_napari_screenshot.py`` (needs an X display: Xvfb); prints the output layers."""

from __future__ import annotations

import sys
import time

import imageio.v3 as iio
import napari
from qtpy.QtWidgets import QApplication


def main(model: str, out: str, size: int = 192) -> None:
    viewer = napari.Viewer(show=True, title="microdiff in napari")
    viewer.window._qt_window.resize(1400, 820)
    viewer.open_sample("microdiff", "simulated_pair")
    viewer.open(model, plugin="microdiff")  # the reader docks the widget with this model
    _, widget = viewer.window.add_plugin_dock_widget("microdiff", "Predict (CVDM)")
    widget.image.value = viewer.layers["widefield (simulated)"]
    widget.device.value = "cpu"
    widget.run()
    start = time.time()
    while widget.busy and time.time() - start < 600:
        QApplication.processEvents()
        time.sleep(0.02)
    viewer.layers["SIM target (simulated)"].visible = True
    viewer.grid.enabled, viewer.grid.shape = True, (2, 2)
    viewer.reset_view()
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.02)
    iio.imwrite(out, viewer.screenshot(canvas_only=False, flash=False))
    print(";".join(f"{layer.name}:{tuple(layer.data.shape)}:{tuple(round(s, 5) for s in layer.scale)}"
                   for layer in viewer.layers))
    print(widget.status.value)
    viewer.close()


if __name__ == "__main__":
    main(*sys.argv[1:3])
