"""Dataset listing for the reconstruction benchmark: folders, tar shards, the ImageNet-val default."""

import tarfile

import pytest

from evals.benchmarks.recon.data import ImageLoader, list_images
from unilip.data import ImageReadError


def test_folder_listing_is_sorted_and_recursive(photo_folder):
    listing = list_images("folder", str(photo_folder), None)
    ids = [item.id for item in listing.items]
    assert ids == sorted(ids) and len(ids) == 6 and all("/" in i for i in ids)
    assert [row[0] for row in listing.identity] == ids and listing.skipped == []


def test_tar_shards_list_and_load_like_the_folder(photo_folder, tmp_path):
    files = sorted(p for p in photo_folder.rglob("*") if p.is_file())
    for shard_index in range(2):
        with tarfile.open(tmp_path / f"val-{shard_index:06d}.tar", "w") as archive:
            for path in files[shard_index::2]:
                archive.add(path, arcname=f"{path.stem}.{path.suffix.lstrip('.')}")
    items = list_images("tar", str(tmp_path), None).items
    assert len(items) == 6 and items[0].id.startswith("val-000000.tar/")
    loader = ImageLoader()
    image, raw = loader.load(items[0].source)
    assert image.mode == "RGB" and len(raw) > 1000
    loader.close()
    limited = list_images("tar", str(tmp_path), 4).items
    assert [i.id for i in limited] == [i.id for i in items[:4]]


def test_imagenet_val_wants_all_50000_unless_asked(photo_folder):
    with pytest.raises(ValueError, match="uses all 50,000"):
        list_images("imagenet-val", str(photo_folder), None)
    assert len(list_images("imagenet-val", str(photo_folder), 3).items) == 3
    with pytest.raises(ValueError, match="only 6 images"):
        list_images("folder", str(photo_folder), 7)


def test_corrupt_tar_member_is_reported(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with tarfile.open(tmp_path / "s.tar", "w") as archive:
        archive.add(bad, arcname="bad.jpg")
    items = list_images("tar", str(tmp_path / "s.tar"), None).items
    with pytest.raises(ImageReadError, match="s.tar:bad.jpg: not a readable image"), ImageLoader() as loader:
        loader.load(items[0].source)
