#!/usr/bin/env bash
# Builds the local base images the e2e tests use instead of public images
# (no registry can be reached here), once per machine:
#   localhost/logtap-bookworm        Debian 12 minbase          (glibc 2.36)
#   localhost/logtap-bookworm-build  ... plus gcc, libc6-dev    (build stages)
#   localhost/logtap-bullseye        Debian 11 minbase          (glibc 2.31)
#   localhost/logtap-bullseye-build  ... plus gcc, libc6-dev
# Each is `debootstrap --variant=minbase` then `podman import`; the rootfs
# of the -build variant is kept in $LOGTAP_ROOTFS_DIR/<suite> for chroot
# tests. An image that already exists is not rebuilt (cache); remove it
# with `podman rmi` to force. Usage: bases.sh [bookworm] [bullseye]
set -euo pipefail
: "${LOGTAP_ROOTFS_DIR:=/var/cache/logtap-e2e/rootfs}"
MIRROR=${DEBIAN_MIRROR:-}
PATH_ENV='ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
log() { echo "bases: $*" >&2; }

import() { # ROOT NAME
  tar --numeric-owner -C "$1" -c . | podman import -q --change "$PATH_ENV" --change 'CMD ["/bin/bash"]' - "localhost/$2" >/dev/null
}

build_suite() { # SUITE
  local suite=$1 root=$LOGTAP_ROOTFS_DIR/$1
  if podman image exists "localhost/logtap-$suite" && podman image exists "localhost/logtap-$suite-build" \
     && [ -x "$root/usr/bin/gcc" ]; then
    log "$suite: cached"; return 0
  fi
  if [ ! -x "$root/usr/bin/gcc" ]; then
    rm -rf "$root" "$root.tmp"; mkdir -p "$LOGTAP_ROOTFS_DIR"
    log "$suite: debootstrap --variant=minbase (about a minute)"
    debootstrap --variant=minbase "$suite" "$root.tmp" $MIRROR >"$LOGTAP_ROOTFS_DIR/$suite.debootstrap.log" 2>&1 \
      || { tail -20 "$LOGTAP_ROOTFS_DIR/$suite.debootstrap.log" >&2; return 1; }
    rm -rf "$root.tmp/var/cache/apt/archives/"*.deb "$root.tmp/var/lib/apt/lists/"*_Packages 2>/dev/null || true
    log "$suite: import localhost/logtap-$suite"
    import "$root.tmp" "logtap-$suite"
    log "$suite: apt-get install gcc libc6-dev (in the rootfs)"
    chroot "$root.tmp" /usr/bin/env DEBIAN_FRONTEND=noninteractive sh -c \
      'apt-get update -qq && apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null && apt-get clean' \
      >"$LOGTAP_ROOTFS_DIR/$suite.apt.log" 2>&1 || { tail -20 "$LOGTAP_ROOTFS_DIR/$suite.apt.log" >&2; return 1; }
    mv "$root.tmp" "$root"
  elif ! podman image exists "localhost/logtap-$suite"; then
    # rootfs kept but runtime image gone: gcc is in the rootfs now; the
    # runtime base just carries a compiler too (harmless for the tests)
    log "$suite: re-import localhost/logtap-$suite from the kept rootfs"
    import "$root" "logtap-$suite"
  fi
  log "$suite: import localhost/logtap-$suite-build"
  import "$root" "logtap-$suite-build"
}

suites=("$@"); [ ${#suites[@]} -gt 0 ] || suites=(bookworm bullseye)
# in parallel: mostly waiting for the mirror and the disk
pids=()
for s in "${suites[@]}"; do build_suite "$s" & pids+=($!); done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
exit $rc
