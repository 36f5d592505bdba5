"""The image store: names point at content, content is shared and kept while in use."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox_net.errors import ImageError, ImageInUse, UnknownImage
from sandbox_net.images.store import ImageMeta, ImageStore, now
from tests.images import add_image, tiny_rootfs


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "images")


def test_commit_list_get_and_names(store: ImageStore) -> None:
    first = add_image(store, "base", env={"A": "1"})
    assert store.get("base") == first and first.rootfs.is_dir()
    assert (first.rootfs / "etc" / "passwd").is_file()
    assert [i.name for i in store.list()] == ["base"]
    assert first.public()["env"] == {"A": "1"}
    assert (store.root.stat().st_mode & 0o777) == 0o700
    with pytest.raises(UnknownImage, match="no image named 'nope'"):
        store.get("nope")
    assert store.find("../refs") is None
    with pytest.raises(ImageError, match="invalid image name"):
        add_image(store, "Bad/Name")


def test_two_names_share_content_and_removing_one_keeps_it(store: ImageStore) -> None:
    image = add_image(store, "base")
    meta = ImageMeta(source="packages", created=now(), size_bytes=1)
    alias = store.commit("again", image.id, None, meta)   # the same id: no tree needed
    assert alias.path == image.path
    store.remove("base")
    assert store.get("again").rootfs.is_dir()
    store.remove("again")
    assert store.list() == [] and not image.path.exists()


def test_content_in_use_is_not_removed(store: ImageStore) -> None:
    image = add_image(store, "busy")
    hold = store.hold(image)
    with pytest.raises(ImageInUse, match="in use by a running sandbox"):
        store.remove("busy")
    assert store.get("busy") == image
    hold.release()
    store.remove("busy")
    assert not image.path.exists()
    with pytest.raises(UnknownImage, match="was removed"):
        store.hold(image)


def test_renaming_a_name_collects_its_old_content_once_unused(store: ImageStore,
                                                                tmp_path: Path) -> None:
    old = add_image(store, "py", env={"V": "1"})
    hold = store.hold(old)
    new = add_image(store, "py", env={"V": "2"})
    assert store.get("py") == new and old.path.exists()     # a sandbox still runs on it
    hold.release()
    add_image(store, "other")                                # any later change collects it
    assert not old.path.exists() and new.path.exists()


def test_staging_is_private_and_cleaned(store: ImageStore) -> None:
    with store.staging() as staging:
        tiny_rootfs(staging / "rootfs")
        assert staging.parent == store.root / "staging"
    assert not staging.exists()


def test_unknown_content_without_a_tree_is_refused(store: ImageStore) -> None:
    meta = ImageMeta(source="oci", created=now(), size_bytes=1)
    with pytest.raises(ImageError, match="no content"):
        store.commit("ghost", "0" * 64, None, meta)
