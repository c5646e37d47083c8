#!/bin/sh
# Installs, from Debian 12's archive, whatever nixproc-init needs to build, test and demo
# that is not on the machine yet. Idempotent; run as root.
#   packaging/install-deps.sh          build + test dependencies
set -eu

# Build: C++20 toolchain, Boost 1.81 headers (Asio, Process v1), yaml-cpp, spdlog (+fmt), Catch2 2,
# pugixml (Disnix manifests).
build="build-essential cmake pkg-config libboost1.81-dev libyaml-cpp-dev libspdlog-dev catch2 libpugixml-dev"
# Run-time and tests: unshare/script (util-linux), ps/pkill (procps), python3 for the pty driver
# and the Disnix stand-ins, PyYAML for the Kubernetes manifest's test, the process managers (s6 and
# execline, which runs s6-rc's oneshot scripts), Nix, nginx, and the inits we benchmark against.
run="util-linux procps python3 python3-yaml curl hyperfine supervisor s6 execline nix-bin nginx-light tini dumb-init catatonit"
# The container tests and packaging/docker/build-images.sh: both engines (podman with runc, as crun
# fails on hybrid cgroups), and debootstrap for the base images.
containers="docker.io podman runc debootstrap"

missing=""
for p in $build $run $containers; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "install-deps: installing:$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
