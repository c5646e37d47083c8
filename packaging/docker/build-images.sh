#!/bin/sh
# Builds nixproc-init's container images on a machine that reaches no registry: the Debian 12 base
# images from the Debian mirror this machine's apt already uses, then the images of
# packaging/docker/Dockerfile with the engine's own `build`.
#   packaging/docker/build-images.sh [docker|podman]        (default: docker)
# Run as root from anywhere. Images made:
#   nixproc/debian:bookworm-base    debootstrap --variant=minbase, imported (`docker import`)
#   nixproc/debian:bookworm-build   + the compiler and the libraries nixproc-init builds with
#   nixproc/debian:bookworm-demo    + supervisor, nix-bin, nginx-light, vim-tiny, procps
#   nixproc-init:latest             FROM base: /usr/sbin/nixproc-init as ENTRYPOINT
#   nixproc-demo:latest             FROM demo: the webapp demo (README: "The demo in a container")
# The root file systems are made once and kept in NIXPROC_IMAGE_CACHE (default
# /var/cache/nixproc-init/images) until the package lists, the mirror or this script change; an
# engine imports them again only when its copy is from other ones. Packages are installed with
# apt-get in a chroot (debootstrap's --include cannot resolve nix-bin's virtual dependencies).
# Environment: NIXPROC_DEBIAN_MIRROR (default: the first bookworm entry of apt's sources,
# packaging/docker/apt-mirror.py); DOCKER_HOST, CONTAINERS_CONF, CONTAINERS_STORAGE_CONF as the
# engines read them (the tests point them at their own daemon and storage).
set -eu
# The whole script is one compound command, read before any of it runs: an edit of this file (a
# git pull) while a build runs cannot change what the running build does next.
{
engine=${1:-docker}
case "$engine" in
    docker|podman) ;;
    *) echo "build-images.sh: unknown engine '$engine' (docker or podman)" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
source_dir=$(cd "$here/../.." && pwd)
cache=${NIXPROC_IMAGE_CACHE:-/var/cache/nixproc-init/images}
release=bookworm

# What each image adds to minbase. The build image has what packaging/install-deps.sh lists for
# building (without Catch2: the image builds no test).
build_packages="build-essential cmake pkg-config libboost1.81-dev libyaml-cpp-dev libspdlog-dev libpugixml-dev"
demo_packages="supervisor nix-bin nginx-light vim-tiny procps"

[ "$(id -u)" = 0 ] || { echo "build-images.sh: run as root (debootstrap and chroot need it)" >&2; exit 1; }
# debootstrap, docker.io, podman, runc: what is missing of them (and of the rest of the project's
# Debian packages) is installed.
"$source_dir/packaging/install-deps.sh"

sources=$("$here/apt-mirror.py" "$release")
mirror=${NIXPROC_DEBIAN_MIRROR:-$(echo "$sources" | head -n 1 | cut -d ' ' -f 1)}
# Same inputs, same root file systems: the stamp names them. Bump recipe when
# make_root_file_systems changes what it makes.
recipe=1
stamp=$( { echo "$recipe $release"; echo "$sources"; echo "$mirror"; echo "$build_packages"; echo "$demo_packages"; } |
    sha256sum | cut -c 1-16)

log() { echo "build-images.sh: $*" >&2; }


# Installs PACKAGES into the root file system DIR from its own apt sources.
chroot_install() {
    dir=$1; shift
    [ $# -eq 0 ] && return 0
    # shellcheck disable=SC2068
    DEBIAN_FRONTEND=noninteractive chroot "$dir" apt-get install -y -q --no-install-recommends $@ >"$dir.apt.log" 2>&1 ||
        { tail -n 30 "$dir.apt.log" >&2; log "apt-get install in $dir failed (its whole log: $dir.apt.log)"; return 1; }
    chroot "$dir" apt-get clean
}

# Makes $cache/$stamp/{base,build,demo}.tar, unless they are there.
make_root_file_systems() {
    out=$cache/$stamp
    [ -f "$out/done" ] && { log "root file systems $stamp are cached in $out"; return 0; }
    mkdir -p "$cache"
    work=$(mktemp -d "$cache/work.XXXXXX")
    # debootstrap mounts /proc and /sys in the new root while it runs; leave nothing mounted.
    trap 'for m in proc sys; do umount -l "$work/rootfs/$m" 2>/dev/null || true; done; rm -rf "$work"' EXIT
    started=$(date +%s)
    log "debootstrap --variant=minbase $release from $mirror"
    debootstrap --variant=minbase "$release" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
        { tail -n 30 "$work/debootstrap.log" >&2; log "debootstrap failed"; exit 1; }
    # The same archive entries as the host, so that the images get the same package versions.
    echo "$sources" | while read -r uri suite components; do
        echo "deb $uri $suite $components"
    done >"$work/rootfs/etc/apt/sources.list"
    printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$work/rootfs/etc/apt/apt.conf.d/90nixproc"
    # No service starts while packages are installed (nginx's postinst would): as Debian's images.
    printf '#!/bin/sh\nexit 101\n' >"$work/rootfs/usr/sbin/policy-rc.d"
    chmod 755 "$work/rootfs/usr/sbin/policy-rc.d"
    DEBIAN_FRONTEND=noninteractive chroot "$work/rootfs" apt-get update -q >"$work/update.log" 2>&1 ||
        { cat "$work/update.log" >&2; log "apt-get update in the new root failed"; exit 1; }
    DEBIAN_FRONTEND=noninteractive chroot "$work/rootfs" apt-get upgrade -y -q >>"$work/update.log" 2>&1 ||
        { cat "$work/update.log" >&2; log "apt-get upgrade in the new root failed"; exit 1; }
    chroot "$work/rootfs" apt-get clean
    mkdir -p "$work/out"
    for variant in build demo; do
        cp -a "$work/rootfs" "$work/$variant"
        eval "packages=\$${variant}_packages"
        log "installing into $variant: $packages"
        # shellcheck disable=SC2086,SC2154
        chroot_install "$work/$variant" $packages
        rm -rf "$work/$variant/var/lib/apt/lists"/*
        tar --numeric-owner -C "$work/$variant" -cf "$work/out/$variant.tar" .
        rm -rf "$work/$variant"
    done
    rm -rf "$work/rootfs/var/lib/apt/lists"/*
    tar --numeric-owner -C "$work/rootfs" -cf "$work/out/base.tar" .
    touch "$work/out/done"
    rm -rf "$out"
    mv "$work/out" "$out"
    # Older stamps are root file systems no longer asked for.
    for old in "$cache"/*/done; do
        [ -e "$old" ] && [ "$(dirname "$old")" != "$out" ] && rm -rf "$(dirname "$old")"
    done
    log "root file systems made in $(($(date +%s) - started)) s"
}

# Imports a root file system as nixproc/debian:bookworm-VARIANT unless the engine has that one.
import_base_image() {
    variant=$1
    tag=nixproc/debian:$release-$variant
    have=$("$engine" image inspect --format '{{ index .Config.Labels "org.nixproc.rootfs" }}' "$tag" 2>/dev/null || true)
    if [ "$have" = "$stamp" ]; then
        log "$engine has $tag ($stamp)"
        return 0
    fi
    log "$engine import $tag"
    "$engine" import --change "LABEL org.nixproc.rootfs=$stamp" --change 'CMD ["/bin/bash"]' \
        "$cache/$stamp/$variant.tar" "$tag" >/dev/null
}

mkdir -p "$cache"
# One builder at a time (the tests build for docker and podman at once).
exec 9>"$cache/.lock"
flock 9
make_root_file_systems
flock -u 9
for variant in base build demo; do
    import_base_image "$variant"
done
version=$(sed -n 's/^project(nixproc-init VERSION \([0-9.]*\).*/\1/p' "$source_dir/CMakeLists.txt")
build_options=""
# podman: the limits root may set here, and the docker format: podman builds OCI images by
# default, a format without HEALTHCHECK (podman drops it with a warning).
[ "$engine" = podman ] && build_options="$("$here/podman-limits.sh") --format docker"
for target in init demo; do
    started=$(date +%s)
    log "$engine build --target $target"
    # shellcheck disable=SC2086
    "$engine" build $build_options --file "$here/Dockerfile" --target "$target" \
        --tag "nixproc-$target:latest" --tag "nixproc-$target:$version" "$source_dir"
    log "nixproc-$target:$version built in $(($(date +%s) - started)) s"
done
exit 0
}
