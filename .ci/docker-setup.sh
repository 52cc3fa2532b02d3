#!/usr/bin/env bash
# Installs what the Docker-backed integration tests need on a fresh Debian 12
# machine (run as root). Idempotent: when it is installed it changes nothing
# and does not even refresh the package lists.
#
#   docker.io   Docker Engine 20.10 (dockerd, the docker CLI, containerd, runc,
#               docker-proxy). The tests never use the machine's daemon: each
#               test binary starts a private dockerd (its own data root, exec
#               root and socket in a temp dir; no bridge, no iptables, vfs
#               storage; tests/support/docker.rs) and imports its busybox image
#               from the busybox-static rootfs that .ci/podman-setup.sh
#               provides. The package's systemd units are not started here.
set -euo pipefail

# shellcheck source=.ci/apt.sh
. "$(dirname "$0")/apt.sh"
apt_install docker.io

# Fail here, not in a test, if the install did not give us what tests rely on.
/usr/sbin/dockerd --version
/usr/bin/docker --version
