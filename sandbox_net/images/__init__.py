"""Sandbox images: the root filesystem every sandbox runs on, never the host's.

store.py   content-addressed trees and the names pointing at them (host-wide cache)
build.py   images from the distribution's packages (mmdebstrap); base.py: the default one
oci.py     OCI images imported from a layout or a docker/podman save archive (skopeo, umoci)
rootfs.py  reading an image's files from the host without following its symlinks
users.py   the user a sandbox runs as, resolved in the image
disk.py    an image as an ext4 file, the microVM's read-only root device
"""
