"""Warnings of worker threads: each thread gets its own, overlapping workers leave warnings working."""

import threading
import warnings

from napari_tilemap import IntensityWarning
from napari_tilemap._qt._threadwarnings import thread_warnings


def _warn_in_thread(text: str, entered: threading.Event, go: threading.Event, out: list) -> None:
    with thread_warnings() as caught:
        entered.set()
        go.wait(5)
        warnings.warn(text, IntensityWarning)
    out.extend(str(w.message) for w in caught)


def test_each_thread_collects_only_its_own_warnings_and_others_go_where_they_went():
    entered = [threading.Event(), threading.Event()]
    go = [threading.Event(), threading.Event()]
    got: list[list[str]] = [[], []]
    threads = [threading.Thread(target=_warn_in_thread, args=(f"from worker {i}", entered[i], go[i], got[i]))
               for i in range(2)]
    with warnings.catch_warnings(record=True) as main_caught:
        warnings.simplefilter("always")
        for t, e in zip(threads, entered):
            t.start()
            e.wait(5)
        # both collect now; a warning of the main thread is neither worker's
        warnings.warn("from the main thread", UserWarning)
        # the first worker to start finishes first (not the last-in, first-out order of catch_warnings)
        for t, g in zip(threads, go):
            g.set()
            t.join(5)
        warnings.warn("after both", UserWarning)
    assert got == [["from worker 0"], ["from worker 1"]]
    assert [str(w.message) for w in main_caught] == ["from the main thread", "after both"]


def test_the_same_warning_of_the_plugin_is_collected_again_on_the_next_run():
    registry: dict = {}  # the registry of the module that warns, which remembers what it said

    def run(module: str):
        with thread_warnings() as caught:
            warnings.warn_explicit("off scale", IntensityWarning, "x.py", 1, module=module, registry=registry)
        return [w.category for w in caught]

    with warnings.catch_warnings():
        warnings.resetwarnings()  # Python's own defaults: a warning is said once per place
        assert run("napari_tilemap.maps._predict") == [IntensityWarning]
        assert run("napari_tilemap.maps._predict") == [IntensityWarning]
        registry.clear()
        assert run("other_package") == [IntensityWarning]
        assert run("other_package") == []  # other packages' warnings keep the process's rules
