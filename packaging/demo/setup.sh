#!/bin/sh
# Lays out the demo "container" in DIR: what an image built with nix-processmgmt would hold.
#   packaging/demo/setup.sh DIR WEBAPP_BINARY
# DIR/etc/nixproc/         processes.nix, ids.nix, constructors.nix (the model, editable)
# DIR/etc/supervisor/      supervisord.conf (unix socket in DIR/run), conf.d/ for the switch
# DIR/etc/supervisord.conf and DIR/bin/supervisorctl
#                          what lets a bare `supervisorctl` (the switch's, as upstream's) find
#                          that supervisord.conf: supervisorctl looks first in PREFIX/etc/supervisord.conf,
#                          PREFIX being two folders up from the supervisorctl that runs (supervisor
#                          4.2.5, options.py:108-115), so DIR/bin/supervisorctl (a link to the real one,
#                          first on the demo's PATH) reads DIR/etc/supervisord.conf, a link to
#                          supervisor/supervisord.conf. An image has it at /etc/supervisor/supervisord.conf,
#                          where a bare supervisorctl looks too; this machine's own is there.
# DIR/etc/init.yaml        nixproc-init's configuration
# DIR/env                  the environment nixproc-init runs with (one KEY=VALUE a line)
# DIR/nix/nix.conf         Nix's settings for the demo (NIX_CONF_DIR)
# The Nix profile is DIR/profiles/processes; state, logs and sockets stay under DIR too.
set -eu
dir=$1
webapp=$2
kit=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir/bin" "$dir/etc/nixproc" "$dir/etc/supervisor/conf.d" "$dir/run" "$dir/log" "$dir/nginx" "$dir/profiles" "$dir/state"
chmod 755 "$dir" "$dir/etc" "$dir/etc/nixproc"
[ -e "$dir/etc/nixproc/processes.nix" ] || cp "$kit/processes.nix" "$dir/etc/nixproc/processes.nix"
cp "$kit/ids.nix" "$kit/constructors.nix" "$dir/etc/nixproc/"
chmod 644 "$dir"/etc/nixproc/*.nix
sed "s|/var/run/supervisor.sock|$dir/run/supervisor.sock|; s|/var/log/supervisord.log|$dir/log/supervisord.log|; s|/var/run/supervisord.pid|$dir/run/supervisord.pid|" \
    "$kit/../../config/supervisord.conf" > "$dir/etc/supervisor/supervisord.conf"
ln -sfn supervisor/supervisord.conf "$dir/etc/supervisord.conf"
supervisorctl=$(readlink -f "$(command -v supervisorctl)") || { echo "setup.sh: supervisorctl is not on PATH" >&2; exit 1; }
ln -sfn "$supervisorctl" "$dir/bin/supervisorctl"
cat > "$dir/etc/init.yaml" <<EOY
process_manager: supervisord
processes: $dir/etc/nixproc/processes.nix
profile: $dir/profiles/processes
state_dir: $dir/state
manager:
  config: $dir/etc/supervisor/supervisord.conf
deploy:
  command: [$kit/nixproc-supervisord-switch]
# The demo's model needs no nixpkgs (constructors.nix builds with builtins.derivation): no channel,
# where an upstream image would add nixpkgs-unstable before its first deployment.
bootstrap:
  channel: ""
shutdown:
  grace_s: 8
# nixproc-initctl -c $dir/etc/init.yaml finds it here (an image keeps the default, in /run).
control:
  socket: $dir/run/control.sock
EOY
# Nix as root without the nixbld group, its sandbox or a binary cache (this machine is offline).
mkdir -p "$dir/nix"
printf 'build-users-group =\nsandbox = false\nsubstituters =\n' > "$dir/nix/nix.conf"
cat > "$dir/env" <<EOE
NIXPROC_DEMO_WEBAPP=$webapp
NIXPROC_DEMO_STATE=$dir
NIX_CONF_DIR=$dir/nix
PATH=$dir/bin:$PATH
EOE
