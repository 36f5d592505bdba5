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
