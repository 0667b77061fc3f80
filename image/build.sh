#!/usr/bin/env bash
# `make image`: the agent's OCI image from Debian packages, without a container engine.
#   1. mmdebstrap: a minimal Debian root filesystem (the essential set plus image.env's
#      IMAGE_PACKAGES), without docs, man pages, locales, apt caches, or the CJK encodings and
#      collation tables of the perl that Debian's pg_wrapper scripts need (the agent runs
#      /usr/lib/postgresql/<major>/bin directly);
#   2. the release binary, the nonroot user and group, /tmp;
#   3. umoci: an OCI image layout in target/image/oci (one layer, the config from image.env:
#      user, entrypoint, cmd, environment, org.opencontainers.image.* labels), and
#      target/image/strongroom.oci.tar, the archive a release pushes with
#      `skopeo copy oci-archive:target/image/strongroom.oci.tar docker://REGISTRY/strongroom:TAG`.
# Usage: image/build.sh PATH/TO/release/strongroom
set -euo pipefail
binary=$(realpath "$1")
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=image.env
. "$root/image/image.env"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/agent/Cargo.toml" | head -n1)
out=$root/target/image
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for tool in mmdebstrap umoci; do
  command -v "$tool" >/dev/null || { echo "image: $tool is missing (make image installs it: apt-get install mmdebstrap umoci)" >&2; exit 1; }
done
# The release binary without its line tables (a backtrace still names functions).
strip -o "$work/strongroom" "$binary"
binary=$work/strongroom
echo "== image: root filesystem (Debian $DEBIAN_SUITE: $IMAGE_PACKAGES)" >&2
# Hooks run on the host with the root filesystem as $1.
mmdebstrap --quiet --variant=essential --include="${IMAGE_PACKAGES// /,}" \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
  --dpkgopt='path-exclude=/usr/lib/x86_64-linux-gnu/perl/*/auto/Encode/[CJKT][NPRW]/*' \
  --dpkgopt='path-exclude=/usr/share/perl/*/Unicode/Collate/*' \
  --dpkgopt='path-exclude=/usr/lib/x86_64-linux-gnu/perl/*/auto/Unicode/Collate/*' \
  --dpkgopt='path-exclude=/usr/lib/x86_64-linux-gnu/perl/*/CORE/*' \
  --skip=output/dev \
  --customize-hook="install -m 0755 '$binary' \"\$1$IMAGE_ENTRYPOINT\"" \
  --customize-hook="echo 'nonroot:x:$IMAGE_USER:$IMAGE_GROUP:nonroot:/nonexistent:/usr/sbin/nologin' >> \"\$1/etc/passwd\"" \
  --customize-hook="echo 'nonroot:x:$IMAGE_GROUP:' >> \"\$1/etc/group\"" \
  --customize-hook='chmod 1777 "$1/tmp"' \
  --customize-hook=': > "$1/etc/hostname"; : > "$1/etc/resolv.conf"' \
  --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/* "$1"/var/cache/debconf/*-old "$1"/usr/share/man' \
  "$DEBIAN_SUITE" "$work/rootfs.tar"

echo "== image: OCI layout target/image/oci" >&2
rm -rf "$out"
mkdir -p "$out"
umoci init --layout "$out/oci"
umoci new --image "$out/oci:$version"
umoci raw add-layer --image "$out/oci:$version" "$work/rootfs.tar"
config=(--config.user "$IMAGE_USER:$IMAGE_GROUP" --config.entrypoint "$IMAGE_ENTRYPOINT"
  --config.cmd "$IMAGE_CMD" --config.env "PATH=$IMAGE_PATH" --config.env TMPDIR=/tmp
  --config.workingdir / --os linux --architecture amd64
  --config.label "org.opencontainers.image.title=$IMAGE_TITLE"
  --config.label "org.opencontainers.image.description=$IMAGE_DESCRIPTION"
  --config.label "org.opencontainers.image.version=$version"
  --config.label "org.opencontainers.image.source=$IMAGE_SOURCE"
  --config.label "org.opencontainers.image.licenses=$IMAGE_LICENSES"
  --config.label "org.opencontainers.image.revision=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)"
  --config.label "org.opencontainers.image.base.name=debian:$DEBIAN_SUITE")
umoci config --image "$out/oci:$version" "${config[@]}"
umoci gc --layout "$out/oci"
tar -C "$out/oci" -cf "$out/strongroom.oci.tar" .
compressed=$(find "$out/oci/blobs" -type f -printf '%s\n' | sort -n | tail -n1)
echo "== image: strongroom:$version, $(du -h "$out/strongroom.oci.tar" | cut -f1) archive, largest blob (the layer, gzip) $((compressed / 1024 / 1024)) MiB" >&2
