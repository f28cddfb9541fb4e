# Sourced by tests/setup_browser.sh and tests/setup_slurm.sh: install Debian packages with apt-get where this machine
# allows it (apt-get present, and root or passwordless sudo). Where it does not, say why and return 1; the caller
# then exits 0 and the tests that need the packages skip with that reason.
#
#   apt_install "setup_x: what is missing" PACKAGE...
apt_install() {
    local why=$1
    shift
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "$why and apt-get is not available; the tests that need it will be skipped" >&2
        return 1
    fi
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo="sudo -n"
        else
            echo "$why and this is not root (no passwordless sudo); the tests that need it will be skipped" >&2
            return 1
        fi
    fi
    echo "$why: installing $* with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "$@"
}
