#!/usr/bin/env bash
# Install the system packages the tests, demo and benchmark need, if any is missing:
# PostgreSQL 15 server + client, Ceph (mon, osd, radosgw) for a real S3 server with Object
# Lock, Debian's clickhouse-server 18.16 (for the version refusal), and small tools (curl, gzip, pigz, zstd, GNU time, hey for the HTTP load in make bench).
# Debian packages; needs root (or sudo).
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have pg_config && [ -x "$(pg_config --bindir)/initdb" ] || need+=(postgresql-15 postgresql-client-15)
have psql || need+=(postgresql-client-15)
have radosgw || need+=(radosgw)
have ceph-mon || need+=(ceph-mon)
have ceph-osd || need+=(ceph-osd)
have curl || need+=(curl)
have gzip || need+=(gzip)
have pigz || need+=(pigz)
have zstd || need+=(zstd)
[ -x /usr/sbin/clickhouse-server ] || need+=(clickhouse-server)
have hey || need+=(hey)
[ -x /usr/bin/time ] || need+=(time)
have python3 || need+=(python3 python3-venv)
# make image and make e2e: a Debian root filesystem, an OCI layout, an OCI runtime.
have mmdebstrap || need+=(mmdebstrap)
have umoci || need+=(umoci)
have crun || need+=(crun)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
echo "install-deps: installing ${need[*]}" >&2
sudo=
if [ "$(id -u)" != 0 ]; then
  have sudo || { echo "install-deps: need root or sudo to install: ${need[*]}" >&2; exit 1; }
  sudo=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
