#!/usr/bin/env bash
# Install sandgate as a systemd service on this host.
#
#   sudo deploy/systemd/install.sh                 # build /opt/sandgate/venv, enable, start
#   deploy/systemd/install.sh --root DIR --venv V  # stage into DIR, reusing venv V (packaging,
#                                                  # tests); nothing is started
#
# Installs: /opt/sandgate/venv (the package), /etc/systemd/system/sandgate.service,
# /etc/sandgate/sandgate.env (0600, kept if present), /etc/modules-load.d/sandgate.conf,
# /var/lib/sandgate/policies (seeded from policies/ when empty).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
root=""
venv=""

die() { echo "install: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --root) root=$(realpath -m "$2"); shift 2 ;;
        --venv) venv=$(realpath "$2"); shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

[ -n "$root" ] || [ "$(id -u)" -eq 0 ] || die "run as root (or stage with --root DIR)"

# shellcheck source=../../scripts/python.sh
source "$repo/scripts/python.sh"

install -d -m 0755 "$root/opt/sandgate" "$root/etc/systemd/system" "$root/etc/modules-load.d"
install -d -m 0700 "$root/etc/sandgate" "$root/var/lib/sandgate" \
    "$root/var/lib/sandgate/policies"

if [ -n "$venv" ]; then
    ln -sfn "$venv" "$root/opt/sandgate/venv"
else
    python=$(find_python) || die "no Python >= 3.12 found on PATH or through pyenv; install
  one (e.g. 'pyenv install 3.12', or python3.12 and python3.12-venv) and run this again"
    "$python" -m venv "$root/opt/sandgate/venv"
    "$root/opt/sandgate/venv/bin/pip" install --quiet "$repo"
fi

install -m 0644 "$here/sandgate.service" "$root/etc/systemd/system/sandgate.service"
install -m 0644 "$here/modules-load.conf" "$root/etc/modules-load.d/sandgate.conf"
if [ ! -e "$root/etc/sandgate/sandgate.env" ]; then
    install -m 0600 "$here/sandgate.env" "$root/etc/sandgate/sandgate.env"
fi
if [ -z "$(ls -A "$root/var/lib/sandgate/policies")" ]; then
    cp "$repo"/policies/*.yaml "$root/var/lib/sandgate/policies/" 2>/dev/null || true
fi

if [ -z "$root" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable --now sandgate.service
    echo "install: sandgate.service enabled and started; 'systemctl status sandgate'"
else
    echo "install: staged into ${root:-/}; enable with 'systemctl enable --now sandgate'"
fi
