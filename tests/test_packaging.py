"""The installed package: manifest shipped and valid, light import, console command."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_is_light():
    code = (
        "import sys, napari_tilemap as tm; "
        "heavy = [m for m in ('torch', 'napari', 'qtpy', 'PyQt5', 'zarr', 'dask') if m in sys.modules]; "
        "print(heavy); assert not heavy, heavy; assert 'predict' in tm.__all__"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_api_names_resolve():
    import napari_tilemap as tm

    for name in tm.__all__:
        assert getattr(tm, name) is not None, name


def test_manifest_is_valid_and_discovered_by_napari():
    npe2 = pytest.importorskip("npe2")
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("napari-tilemap")
    assert manifest.display_name == "Tilemap"
    assert any(s.key == "surface" for s in manifest.contributions.sample_data)
    result = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-tilemap"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert npe2 is not None


def test_the_manifest_inside_the_package_is_the_top_level_one():
    import napari_tilemap

    shipped = Path(napari_tilemap.__file__).with_name("napari.yaml")
    assert shipped.read_text() == (ROOT / "napari.yaml").read_text()


@pytest.mark.skipif(os.environ.get("TILEMAP_SKIP_WHEEL") == "1", reason="wheel build skipped on request")
def test_the_wheel_ships_the_manifest(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
    )
    (wheel,) = tmp_path.glob("napari_tilemap-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read("napari_tilemap/napari.yaml").decode() == (ROOT / "napari.yaml").read_text()
        entry_points = next(n for n in zf.namelist() if n.endswith("entry_points.txt"))
        text = zf.read(entry_points).decode()
    assert "napari_tilemap:napari.yaml" in text
    assert "tilemap = napari_tilemap.cli:main" in text
