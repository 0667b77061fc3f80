#!/usr/bin/env bash
# Start a single-node Ceph cluster (1 mon, 1 memstore OSD) and radosgw on 127.0.0.1.
# RGW_OBJECTSTORE=bluestore keeps the data in a sparse file of RGW_BLUESTORE_BYTES (32 GiB)
# instead of RAM (memstore, RGW_MEMSTORE_BYTES, 8 GiB): the ClickHouse benchmark's copies do not
# fit in memory. A full OSD stalls writes rather than failing them: size the file for the data.
# Beast runs with tcp_nodelay=1, as RGW is usually deployed: without it each small answer (headers
# and XML body in two writes) waits ~40 ms for the client's delayed ACK.
# Usage: ceph-rgw.sh DIR RGW_PORT ACCESS_KEY SECRET_KEY [UID:ACCESS:SECRET...]
# The first user owns the test buckets; the others exist only to be granted access by bucket
# policies (least-privilege tests: the ClickHouse server role, the writer, the reader).
# Everything lives in DIR; stop it with `kill $(cat DIR/run/*.pid)`.
set -euo pipefail
dir=$1 port=$2 access=$3 secret=$4
shift 4
mkdir -p "$dir"/{mon,osd,run,log}
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
mon_port=$(free_port)
fsid=$(cat /proc/sys/kernel/random/uuid)
conf=$dir/ceph.conf
cat >"$conf" <<CONF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
public addr = 127.0.0.1
ms bind msgr1 = false
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = true
mon allow pool size one = true
mon warn on pool no redundancy = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon max pg per osd = 1000
osd objectstore = ${RGW_OBJECTSTORE:-memstore}
memstore device bytes = ${RGW_MEMSTORE_BYTES:-8589934592}
bluestore block create = true
bluestore block size = ${RGW_BLUESTORE_BYTES:-34359738368}
bluestore cache size = 268435456
osd crush chooseleaf type = 0
run dir = $dir/run
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
pid file = $dir/run/\$name.pid
mon data = $dir/mon/\$name
osd data = $dir/osd/\$name
keyring = $dir/keyring
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:$port tcp_nodelay=1
rgw data = $dir/rgw
ms mon client mode = crc
ms client mode = crc
rgw enable usage log = false
rgw dns name = 127.0.0.1
CONF
ceph-authtool --create-keyring "$dir/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
monmaptool --create --add a "v2:127.0.0.1:$mon_port" --fsid "$fsid" "$dir/monmap" >/dev/null
ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/keyring"
ceph-mon -c "$conf" -i a
osd_id=$(ceph -c "$conf" osd create)
mkdir -p "$dir/osd/osd.$osd_id"
ceph-osd -c "$conf" -i "$osd_id" --mkfs 2>>"$dir/log/osd-mkfs.log"
ceph-osd -c "$conf" -i "$osd_id" 2>>"$dir/log/osd-start.log"
mkdir -p "$dir/rgw"
radosgw -c "$conf" -n client.rgw
up=
for _ in $(seq 1 120); do
  if curl -s -o /dev/null "http://127.0.0.1:$port/"; then up=1; break; fi
  sleep 0.5
done
[ -n "$up" ] || { echo "ceph-rgw.sh: radosgw did not answer on 127.0.0.1:$port" >&2; exit 1; }
radosgw-admin -c "$conf" -n client.rgw --admin-socket="$dir/run/radosgw-admin.asok" user create --uid=strongroom --display-name=strongroom \
  --access-key="$access" --secret-key="$secret" >/dev/null
for extra in "$@"; do
  IFS=: read -r uid key secret_key <<<"$extra"
  radosgw-admin -c "$conf" -n client.rgw --admin-socket="$dir/run/radosgw-admin.asok" user create \
    --uid="$uid" --display-name="$uid" --access-key="$key" --secret-key="$secret_key" >/dev/null
done
