#!/bin/sh
# The main job: installs what is missing, builds, and runs the webapp demo of the Nix process
# management framework's mutable multi-process containers: nixproc-init as PID 1, real Nix, real
# supervisord, real nginx.
#   packaging/demo.sh [DIR]               as PID 1 of a new PID namespace, the container's files in
#                                         DIR (default /tmp/nixproc-demo; kept between runs)
#   packaging/demo.sh --in docker|podman  in a container of the image nixproc-demo, built first
#                                         (packaging/docker/build-images.sh); docker needs a
#                                         running dockerd
# Then, from another terminal:  curl -H 'Host: webapp.local' http://localhost:8080
# and edit DIR/etc/nixproc/processes.nix, or in the container:
#   docker exec -it nixproc-demo vi /etc/nixproc/processes.nix
# (README.md walks through adding webapp2). Ctrl-C stops it.
set -eu
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--in" ]; then
    engine=${2:?"demo.sh --in docker|podman"}
    if [ "$engine" = docker ] && ! docker info >/dev/null 2>&1; then
        echo "demo.sh: docker cannot reach a dockerd: start it (systemctl start docker), or use --in podman" >&2
        exit 1
    fi
    packaging/docker/build-images.sh "$engine"
    echo "demo: try: curl -H 'Host: webapp.local' http://localhost:8080; edit: $engine exec -it nixproc-demo vi /etc/nixproc/processes.nix" >&2
    limits=""
    [ "$engine" = podman ] && limits=$(packaging/docker/podman-limits.sh)
    # shellcheck disable=SC2086
    exec "$engine" run --rm -it --name nixproc-demo -p 8080:8080 $limits nixproc-demo:latest
fi
packaging/install-deps.sh
packaging/build.sh default >/dev/null
dir=${1:-/tmp/nixproc-demo}
packaging/demo/setup.sh "$dir" "$PWD/build/packaging/demo/nixproc-demo-webapp"
echo "demo: the model is $dir/etc/nixproc/processes.nix; try: curl -H 'Host: webapp.local' http://localhost:8080" >&2
# shellcheck disable=SC2046
exec env $(cat "$dir/env") unshare --pid --fork --mount-proc build/daemon/nixproc-init -c "$dir/etc/init.yaml"
