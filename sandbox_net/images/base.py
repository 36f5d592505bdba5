"""The built-in image `base`: what a sandbox created without an image runs on. It holds the
tools commands used to find on the host (python3, curl, git, CA certificates) and the user
`agent` (uid 1000).

scripts/bootstrap.sh builds it once per host, at set-up time, the only time the package
mirror is needed:

    python -m sandbox_net.images.base IMAGES_DIR
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from sandbox_net.errors import ImageError
from sandbox_net.images import build
from sandbox_net.images.store import Image, ImageStore

BASE = "base"
BASE_PACKAGES = ("ca-certificates", "curl", "git", "python3")
BASE_HINT = ("scripts/bootstrap.sh builds it at set-up, as root (make up runs it); "
             "see: sandgate image list")


def ensure(store: ImageStore) -> Image:
    """`base` as it is, or built now (about a minute and a half, with mmdebstrap's progress on
    stderr); its microVM disk too."""
    image = store.find(BASE)
    if image is None:
        print(f"building the sandbox image {BASE} ({','.join(BASE_PACKAGES)}) once for this "
              "host; this takes a minute or two", file=sys.stderr, flush=True)
        started = time.monotonic()
        image = build.build(store, BASE, build.host_recipe(BASE_PACKAGES))
        print(f"image {BASE} built in {time.monotonic() - started:.0f} s "
              f"({image.meta.size_bytes // 2**20} MiB, id {image.id[:12]})",
              file=sys.stderr, flush=True)
    store.ensure_disk(image)
    return image


if __name__ == "__main__":
    try:
        print(ensure(ImageStore(Path(sys.argv[1]))).id)
    except ImageError as e:
        sys.exit(f"sandbox image {BASE}: {e}")
