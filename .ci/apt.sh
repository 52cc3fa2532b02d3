# shellcheck shell=bash
# apt_install PKG...: install the Debian packages that are missing (as root);
# when all are present, change nothing and do not refresh the package lists.
apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$pkg")
    done
    if ((${#missing[@]} > 0)); then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update
        apt-get install -y --no-install-recommends "${missing[@]}"
    fi
}
