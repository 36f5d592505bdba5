#!/usr/bin/env bash
# Installs what sandgate needs on a Debian-like host and prepares .venv.
# Idempotent: a second run installs nothing and returns quickly.
#   scripts/bootstrap.sh            system packages + virtualenv
#   scripts/bootstrap.sh --no-apt   virtualenv only
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"

die() { echo "bootstrap: $*" >&2; exit 2; }

# command -> Debian package that provides it
SYSTEM_PACKAGES=(
    "runsc:runsc"
    "nft:nftables"
    "ip:iproute2"
    "nsenter:util-linux"
    "curl:curl"
    "wrk:wrk"
    "runuser:util-linux"
    "pg_ctlcluster:postgresql"       # the audit tests run against a real PostgreSQL too
    "chromium:chromium"              # the audit web view is tested in a real browser
    "chromedriver:chromium-driver"
    "qemu-system-x86_64:qemu-system-x86"   # the microVM runtime
    "busybox:busybox-static"
    "cpio:cpio"
    "mmdebstrap:mmdebstrap"          # sandbox images from the distribution's packages
    "umoci:umoci"                    # OCI images: unpacking layers (rootless)
    "skopeo:skopeo"                  # OCI images: docker/podman save archives and layouts
    "mkfs.ext4:e2fsprogs"            # an image as the microVM's read-only disk
    "systemd-analyze:systemd"        # tests/deploy verifies the systemd unit
    "patchelf:patchelf"              # a pyenv Python copied where every user can run it
    "containerd:containerd"          # a node of Kubernetes: ctr run --cni with sandgate-cni
)

# retry WHAT PAUSE COMMAND...: COMMAND until it succeeds, four tries at most (a download may
# fail for a while); PAUSE, a command, runs between tries.
retry() {
    local what=$1 pause=$2 tries=0
    shift 2
    until "$@"; do
        tries=$((tries + 1))
        [ "$tries" -ge 4 ] && die "could not $what (network?). Retry later."
        echo "bootstrap: could not $what, retrying ($tries/3)" >&2
        $pause
    done
}

quietly() { "$@" >/dev/null; }

refresh_apt_lists() { apt-get -o Acquire::Retries=5 update -qq || sleep 15; }

apt_update_and_install() {
    apt-get -o Acquire::Retries=5 update -qq \
        && apt-get -o Acquire::Retries=5 install -y -qq --no-install-recommends "$@"
}

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    retry "install $* with apt-get" "sleep 15" apt_update_and_install "$@"
}

install_system_packages() {
    local missing=()
    for pair in "${SYSTEM_PACKAGES[@]}" "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "missing system packages (${missing[*]}); run as root or: sudo apt-get install ${missing[*]}"
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get here; install them with your package manager"
    echo "bootstrap: installing ${missing[*]}" >&2
    apt_install "${missing[@]}"
}

# shellcheck source=python.sh
source "$(dirname "${BASH_SOURCE[0]}")/python.sh"

# The venv's interpreter must run for every user: the commands that need no root (policy
# check/test, audit, secret, token) are run by ordinary users too.
venv_usable() {
    [ -x "$VENV/bin/python" ] && python_ok "$VENV/bin/python" || return 1
    python_shared "$("$VENV/bin/python" -c 'import sys; print(sys._base_executable)')"
}

make_venv() {
    if venv_usable; then
        :
    else
        local python
        python=$(find_python) || die "no Python >= 3.12 found on PATH or through pyenv.
  Install one, e.g.: 'pyenv install 3.12' (https://github.com/pyenv/pyenv),
  or a distribution package such as python3.12 with python3.12-venv, then run this again."
        if ! python_shared "$python"; then
            python=$(share_python "$python") || die "could not make $python runnable by every user"
        fi
        echo "bootstrap: creating .venv with $python" >&2
        rm -rf "$VENV"
        "$python" -m venv "$VENV"
    fi
    local stamp="$VENV/.sandgate-installed"
    local want
    want=$(sha256sum pyproject.toml | cut -d' ' -f1)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q -e ".[dev]"
        echo "$want" > "$stamp"
    fi
}

# What the runtimes fetch from the distribution, once per host, into the shared cache
# (SANDGATE_CACHE_DIR): set-up time is the only time they need the package mirror. The
# microVM kernel, and the sandbox image `base` (python3, curl, git, CA certificates; about
# a minute and a half the first time, mmdebstrap's progress shown).
fetch_runtime_artifacts() {
    [ "$(id -u)" -eq 0 ] || return 0
    local cache images
    cache=$("$VENV/bin/python" -c 'from gateway.settings import Settings; print(Settings().cache_dir)')
    images=$("$VENV/bin/python" -c 'from gateway.settings import Settings; print(Settings().images_dir)')
    retry "fetch the microVM kernel" refresh_apt_lists \
        quietly "$VENV/bin/python" -m sandbox_net.runtime.microvm_image "$cache/microvm"
    retry "build the sandbox image base" "sleep 15" \
        quietly "$VENV/bin/python" -m sandbox_net.images.base "$images"
}

main() {
    local apt=1 extra=()
    for arg in "$@"; do
        case "$arg" in
            --no-apt) apt=0 ;;
            --with=*) extra+=("${arg#--with=}") ;;
            *) die "unknown argument $arg" ;;
        esac
    done
    [ "$apt" -eq 1 ] && install_system_packages "${extra[@]}"
    make_venv
    [ "$apt" -eq 1 ] && fetch_runtime_artifacts
    return 0
}

main "$@"
