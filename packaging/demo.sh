#!/bin/sh
# The main job: installs what is missing, builds, and runs the webapp demo of the Nix process
# management framework's mutable multi-process containers, on a machine without Docker:
# nixproc-init as PID 1 of a new PID namespace, real Nix, real supervisord, real nginx.
#   packaging/demo.sh [DIR]      (default /tmp/nixproc-demo; kept between runs, like a container)
# Then, from another terminal:  curl -H 'Host: webapp.local' http://localhost:8080
# and edit DIR/etc/nixproc/processes.nix (README.md walks through adding webapp2). Ctrl-C stops it.
set -eu
cd "$(dirname "$0")/.."
packaging/install-deps.sh
packaging/build.sh default >/dev/null
dir=${1:-/tmp/nixproc-demo}
packaging/demo/setup.sh "$dir" "$PWD/build/packaging/demo/nixproc-demo-webapp"
echo "demo: the model is $dir/etc/nixproc/processes.nix; try: curl -H 'Host: webapp.local' http://localhost:8080" >&2
# shellcheck disable=SC2046
exec env $(cat "$dir/env") unshare --pid --fork --mount-proc build/daemon/nixproc-init -c "$dir/etc/init.yaml"
