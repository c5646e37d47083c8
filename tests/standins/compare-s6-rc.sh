#!/bin/bash
# Runs the same s6-rc scenarios with the real s6-rc tools and with the stand-ins of this folder
# (s6-rc-compile, s6-rc-init, s6-rc, s6-rc-update), each in a PID namespace of its own with the real
# s6-svscan, and prints the difference of the transcripts (exit codes, messages, live folder
# layout, scan folder links, service states). Not part of the test suite: CI has no real s6-rc.
#   tests/standins/compare-s6-rc.sh /opt/s6rc/bin      # where the real tools are installed
# Build the real ones as /work/shared/DESIGN.md says (skarnet/s6-rc v0.5.4.1, --enable-absolute-paths).
# Their own services s6rc-oneshot-runner and s6rc-fdholder, which the stand-ins leave out, are not
# compared, nor the real one's run wrapper for a pipeline's ends (run.user is compared with run). Needs root (unshare), Debian's s6 and execline.
set -u
real=${1:?usage: $0 REAL_S6_RC_BIN_FOLDER}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The service definitions as nixproc-s6-rc-switch's build writes them, and more.
definitions() { # FOLDER VERSION WITH_B
    local sv=$1
    mkdir -p "$sv/default"
    echo bundle > "$sv/default/type"
    : > "$sv/default/contents"
    for n in a ${3:+b}; do
        mkdir -p "$sv/$n-srv" "$sv/$n-log"
        echo longrun > "$sv/$n-srv/type"
        printf '#!/bin/sh\n# %s version %s\nexec sleep 86400\n' "$n" "$2" > "$sv/$n-srv/run"
        echo "$n-log" > "$sv/$n-srv/producer-for"
        echo longrun > "$sv/$n-log/type"
        printf '#!/bin/sh\necho >&3\nexec sleep 86400 3>&-\n' > "$sv/$n-log/run"
        echo "$n-srv" > "$sv/$n-log/consumer-for"
        echo 3 > "$sv/$n-log/notification-fd"
        echo "$n" > "$sv/$n-log/pipeline-name"
        chmod 755 "$sv/$n-srv/run" "$sv/$n-log/run"
        echo "$n-srv" >> "$sv/default/contents"
    done
    mkdir -p "$sv/one" "$sv/dep"
    echo oneshot > "$sv/one/type"
    echo "touch $work/one-up" > "$sv/one/up"
    echo "rm $work/one-up" > "$sv/one/down"
    echo longrun > "$sv/dep/type"
    printf '#!/bin/sh\nexec sleep 86401\n' > "$sv/dep/run"
    chmod 755 "$sv/dep/run"
    echo one > "$sv/dep/dependencies"
    touch "$sv/dep/flag-essential"
}
definitions "$work/sv1" 1 b
definitions "$work/sv2" 2 ""
mkdir -p "$work/bad/norun" "$work/bad2/p" "$work/bad2/q"
echo longrun > "$work/bad/norun/type"
for s in p q; do echo longrun > "$work/bad2/$s/type"; echo '#!/bin/sh' > "$work/bad2/$s/run"; done
echo q > "$work/bad2/p/producer-for"

cat > "$work/scenario" <<'EOF'
#!/bin/bash
export PATH=$1:/usr/bin:/bin
T=$2 W=$3
mkdir -p $T/run/service
norm() { sed -e "s#$T#T#g" -e "s#$W#W#g" -e 's#:\(s6-rc-[a-z]*\):[A-Za-z0-9]\{6\}#:\1:XXXXXX#g' -e '/s6rc-fdholder\|s6rc-oneshot-runner/d'; }
run() { echo "\$ $*" | norm; "$@" > $T/out 2> $T/err; rc=$?; norm < $T/out; norm < $T/err; echo "=> $rc"; }
layout() {
    echo "-- live $(readlink $T/run/s6-rc | norm):"
    if [ -d $T/run/s6-rc ]; then
        (cd $T/run/s6-rc && for f in *; do if [ -L $f ]; then echo "$f -> $(readlink $f)"; else echo "$f"; fi; done) | norm
        echo "servicedirs: $(ls $T/run/s6-rc/servicedirs | norm | tr '\n' ' ')"
    fi
    echo "-- scan:"
    (cd $T/run/service && for f in *; do echo "$f -> $(readlink $f) $(s6-svstat -o up,wantedup $f 2>&1)"; done) | norm
    echo "-- runtime: $(ls $T/run | norm | tr '\n' ' ')"
}
s6-svscan $T/run/service </dev/null >/dev/null 2>&1 &
until [ -p $T/run/service/.s6-svscan/control ]; do sleep 0.05; done
sleep 0.1
run s6-rc-compile $T/db1 $W/sv1
run s6-rc-compile $T/db1 $W/sv1
run s6-rc-compile $T/bad $W/bad
run s6-rc-compile $T/bad2 $W/bad2
run s6-rc-init -c $T/db1 -l $T/run/s6-rc $T/run/service
layout
run s6-rc -l $T/run/s6-rc -u change default
run s6-rc -l $T/run/s6-rc -a list
run s6-rc -l $T/run/s6-rc -u change dep
ls $W/one-up 2>&1 | norm
layout
run s6-rc -l $T/run/s6-rc -u change nope
run s6-rc -l $T/nolive -u change default
run s6-rc -l $T/run/s6-rc frobnicate
run s6-rc -l $T/run/s6-rc -d listall a-log
run s6-rc -l $T/run/s6-rc -d change one
run s6-rc -l $T/run/s6-rc -pu change a
run s6-rc -l $T/run/s6-rc -a list
run s6-rc-compile $T/db2 $W/sv2
run s6-rc-update -l $T/run/s6-rc $T/db2
layout
cat $T/run/s6-rc/servicedirs/a-srv/run.user 2>/dev/null || cat $T/run/s6-rc/servicedirs/a-srv/run # the real one wraps a pipeline's run
run s6-rc -l $T/run/s6-rc -u change default
run s6-rc -l $T/run/s6-rc -da list
run s6-rc-update -l relative $T/db2
run s6-rc-init -c db1 -l $T/run/s6-rc2 $T/run/service
run s6-rc-init -c $T/nodb -l $T/run/s6-rc2 $T/run/service
run s6-rc-init
mkdir -p $T/run/noscan
run s6-rc-init -c $T/db1 -l $T/run/s6-rc3 $T/run/noscan
run s6-rc -l $T/run/s6-rc -bDa change
run s6-rc -l $T/run/s6-rc -a list
ls $W/one-up 2>&1 | norm
layout
run s6-rc-init -c $T/db2 -l $T/run/s6-rc $T/run/service
layout
EOF
chmod 755 "$work/scenario"
timeout 300 unshare --pid --fork --mount-proc "$work/scenario" "$real" "$work/real" "$work" > "$work/real.txt" 2>&1
rm -f "$work/one-up"
timeout 300 unshare --pid --fork --mount-proc "$work/scenario" "$here" "$work/standin" "$work" > "$work/standin.txt" 2>&1
if diff -u --label real --label stand-ins "$work/real.txt" "$work/standin.txt"; then
    echo "same transcript ($(grep -c '^\$ ' "$work/real.txt") commands)"
else
    exit 1
fi
