"""Fixtures for harness tests: a folder of real photos (plus a corrupt file) and a tiny model adapter."""

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory):
    """Six real photos of different sizes and aspect ratios (from scikit-image), as JPEG and PNG."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    photos = {
        "astronaut": data.astronaut(),
        "chelsea": data.chelsea(),
        "coffee": data.coffee(),
        "rocket": data.rocket(),
        "hubble": data.hubble_deep_field()[:300, :400],
        "ihc": data.immunohistochemistry()[100:400, 50:300],
    }
    for index, (name, array) in enumerate(photos.items()):
        sub = folder / ("a" if index % 2 else "b")
        sub.mkdir(exist_ok=True)
        Image.fromarray(np.ascontiguousarray(array)).save(sub / f"{name}.{'png' if index % 2 else 'jpg'}", quality=95)
    return folder


@pytest.fixture
def folder_with_corrupt(photo_folder, tmp_path):
    import shutil

    target = tmp_path / "data"
    shutil.copytree(photo_folder, target)
    (target / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated, not an image")
    return target
