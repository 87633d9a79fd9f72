#!/usr/bin/env bash
# Images made without a container registry, from Debian's packages: debootstrap fetches them from Debian's mirror
# (bookworm with its security and point updates) and `docker import` turns the folder into an image
# (docs/container.md). For machines that reach Debian's mirror but no registry, as CI here; with a registry, the
# Dockerfile's default base (python:3.11-slim-bookworm) and compose.yaml's images (postgres, prom/prometheus) need
# none of this. Root only (debootstrap, chroot).
#   container/base_image.sh            mnist-lightning-base:bookworm: Python 3 and venv, the Dockerfile's base
#   container/base_image.sh --compose  also stand-ins for compose.yaml's PostgreSQL and Prometheus images:
#                                      mnist-lightning-postgres:bookworm, mnist-lightning-prometheus:bookworm
# An image made by the same version of this script and its files is kept (label org.mnist-lightning.recipe);
# FORCE=1 makes them again, with today's Debian updates.
set -euo pipefail
engine="${CONTAINER_ENGINE:-docker}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
here="$(cd "$(dirname "$0")" && pwd)"
recipe="$(cat "$here/base_image.sh" "$here/postgres-entrypoint.sh" | sha256sum | cut -c1-16)"
export PATH="$PATH:/usr/sbin:/sbin"

rootfs=""
trap 'if [ -n "$rootfs" ]; then rm -rf "$rootfs" "$rootfs.log"; fi' EXIT

# make_image NAME PACKAGES [docker import --change ...]: a minimal bookworm with PACKAGES
make_image() {
  local name="$1" packages="$2"
  shift 2
  if [ -z "${FORCE:-}" ] && [ "$("$engine" image inspect --format '{{index .Config.Labels "org.mnist-lightning.recipe"}}' \
    "$name" 2>/dev/null)" = "$recipe" ]; then
    echo "$name is already there"
    return
  fi
  command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }
  [ "$(id -u)" -eq 0 ] || { echo "making $name needs root (debootstrap, chroot): sudo $0" >&2; exit 1; }
  rootfs="$(mktemp -d)"
  # no service is started inside the folder while packages are configured (PostgreSQL's would be)
  mkdir -p "$rootfs/usr/sbin"
  printf '#!/bin/sh\nexit 101\n' > "$rootfs/usr/sbin/policy-rc.d"
  chmod +x "$rootfs/usr/sbin/policy-rc.d"
  {
    debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" "$mirror"
    # the security and point-release updates, which debootstrap's bookworm alone lacks
    cat > "$rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://security.debian.org/debian-security bookworm-security main
SOURCES
    chroot "$rootfs" apt-get update -q
    DEBIAN_FRONTEND=noninteractive chroot "$rootfs" apt-get upgrade -y -q
  } >"$rootfs.log" 2>&1 || { tail -20 "$rootfs.log" >&2; exit 1; }
  rm -f "$rootfs/usr/sbin/policy-rc.d" "$rootfs.log"
  if [ -n "${SETUP:-}" ]; then "$SETUP" "$rootfs"; fi
  # what an image needs no more of: package lists and caches, docs and man pages
  chroot "$rootfs" apt-get clean
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
    "$rootfs"/var/cache/debconf/*-old
  local changes=(--change "LABEL org.mnist-lightning.recipe=$recipe")
  for change in "$@"; do changes+=(--change "$change"); done
  tar -C "$rootfs" -c . | "$engine" import "${changes[@]}" - "$name" >/dev/null
  rm -rf "$rootfs"
  rootfs=""
  echo "built $name"
}

# PostgreSQL as the official postgres image starts: POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB create the
# cluster on the first start, in PGDATA (a volume); the server then runs as postgres, listening on every interface
postgres_setup() {
  local rootfs="$1"
  rm -rf "$rootfs"/var/lib/postgresql/15 "$rootfs"/etc/postgresql/15  # Debian's own cluster: not used
  install -d -o "$(chroot "$rootfs" id -u postgres)" -g "$(chroot "$rootfs" id -g postgres)" \
    "$rootfs/var/lib/postgresql/data" "$rootfs/var/run/postgresql"
  install -m 0755 "$here/postgres-entrypoint.sh" "$rootfs/usr/local/bin/docker-entrypoint.sh"
}

# Prometheus as prom/prometheus runs: as nobody, its database in /prometheus (a volume)
prometheus_setup() {
  install -d -o 65534 -g 65534 "$1/prometheus"
}

make_image mnist-lightning-base:bookworm python3,python3-venv,ca-certificates 'CMD ["python3"]'
if [ "${1:-}" = "--compose" ]; then
  SETUP=postgres_setup make_image mnist-lightning-postgres:bookworm postgresql-15,postgresql-client-15 \
    'USER postgres' 'ENV PGDATA=/var/lib/postgresql/data' 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/bin:/usr/bin:/bin' \
    'VOLUME /var/lib/postgresql/data' 'EXPOSE 5432' \
    'ENTRYPOINT ["docker-entrypoint.sh"]' 'CMD ["postgres"]'
  SETUP=prometheus_setup make_image mnist-lightning-prometheus:bookworm prometheus,wget \
    'USER nobody' 'WORKDIR /prometheus' 'VOLUME /prometheus' 'EXPOSE 9090' 'ENTRYPOINT ["/usr/bin/prometheus"]' \
    'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]'
fi
