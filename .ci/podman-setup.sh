#!/usr/bin/env bash
# Installs what the Podman-backed integration tests need on a fresh Debian 12
# machine (run as root). Idempotent: when everything is already installed it
# changes nothing and does not even refresh the package lists.
#
#   podman         the engine the tests start privately (`podman system service`);
#                  its Debian dependencies bring conmon, crun and netavark
#   busybox-static the statically linked /bin/busybox the test image is built from
#   runc           crun 1.8 (Debian 12) refuses to start containers on hosts with a
#                  hybrid cgroup v1+v2 layout ("cgroups in hybrid mode not
#                  supported"), as on the CI sandbox; the harness uses runc when
#                  present. Without it containers can be created and inspected
#                  but not started.
#
# Nothing for rootless use (uidmap, slirp4netns, fuse-overlayfs) is needed: the
# tests run as root with the vfs driver and no container network. apt's default
# Recommends still pull some of them in, matching the machine the tests were
# proven on.
set -euo pipefail

packages=(podman busybox-static runc)

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

missing=()
for pkg in "${packages[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done

if ((${#missing[@]} > 0)); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y "${missing[@]}"
fi

# Fail here, not in a test, if the install did not give us what tests rely on.
podman --version
test -x /bin/busybox
/bin/busybox true
