# Sourced by scripts/bootstrap.sh and deploy/systemd/install.sh: find a Python >= 3.12 on
# PATH or through pyenv.

python_ok() {  # $1: interpreter; succeeds when it runs and is >= 3.12
    "$1" -c 'import sys, venv; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1
}

find_python() {
    local candidate version
    for candidate in python3.14 python3.13 python3.12 python3; do
        if command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then
            command -v "$candidate"; return 0
        fi
    done
    if command -v pyenv >/dev/null 2>&1; then
        for version in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.(1[2-9]|[2-9][0-9])(\.[0-9]+)?$' | sort -rV); do
            candidate="$(pyenv root)/versions/$version/bin/python3"
            if [ -x "$candidate" ] && python_ok "$candidate"; then
                echo "$candidate"; return 0
            fi
        done
    fi
    return 1
}

python_shared() {  # $1: interpreter; succeeds when every user can run it
    [ "$(id -u)" -eq 0 ] || return 0   # an ordinary user's interpreter serves that user
    # as nobody: a pyenv build under /root (mode 0700) runs for root alone
    setpriv --reuid=65534 --regid=65534 --clear-groups "$1" -c 'import venv' >/dev/null 2>&1
}

# A copy of interpreter $1 that every user can run, under $SANDGATE_PYTHON_ROOT (default
# /opt/sandgate); prints its path. pyenv builds against an absolute libpython path inside
# the owner's home, so the copy's interpreter gets a relative one (patchelf); CPython finds
# its standard library relative to the interpreter.
share_python() {
    local prefix version dest exe
    prefix=$("$1" -c 'import sys; print(sys.base_prefix)') || return 1
    version=$("$1" -c 'import platform; print(platform.python_version())') || return 1
    dest="${SANDGATE_PYTHON_ROOT:-/opt/sandgate}/python-$version"
    if ! python_shared "$dest/bin/python3"; then
        command -v patchelf >/dev/null 2>&1 || { echo "patchelf is needed (apt-get install patchelf)" >&2; return 1; }
        echo "bootstrap: copying $prefix to $dest, where every user can run it" >&2
        rm -rf "$dest.tmp" && mkdir -p "$(dirname "$dest")" || return 1
        chmod a+rx "$(dirname "$dest")"
        cp -a "$prefix" "$dest.tmp" && chmod -R a+rX "$dest.tmp" || return 1
        for exe in "$dest.tmp"/bin/python3*; do
            if [ -f "$exe" ] && [ ! -L "$exe" ] && patchelf --print-rpath "$exe" >/dev/null 2>&1; then
                patchelf --set-rpath '$ORIGIN/../lib' "$exe" || return 1
            fi
        done
        rm -rf "$dest" && mv "$dest.tmp" "$dest" || return 1
        python_shared "$dest/bin/python3" || { echo "$dest/bin/python3 still fails as nobody" >&2; return 1; }
    fi
    echo "$dest/bin/python3"
}
