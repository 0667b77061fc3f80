# The strongroom agent image, for those with a container engine:
#
#   docker build -t strongroom:dev .
#
# Its settings (Debian release, PostgreSQL client major, packages, user, entrypoint, labels)
# come from image/image.env, which `make image` reads too when it builds the same image from
# Debian packages without an engine (image/build.sh); e2e/image/test_image.py checks that this
# file repeats them exactly. pg_dump must be >= the server's major version, and its plain SQL
# should load into the same major on restore, so the client matches the server: change PG_MAJOR
# in image/image.env. Runs as a non-root user and needs no writable root filesystem (only
# /tmp, an emptyDir).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY agent ./agent
RUN cargo build --release --locked --bin strongroom \
 && strip target/release/strongroom

FROM debian:bookworm-slim
COPY image/image.env /tmp/image.env
RUN set -eux; \
    . /tmp/image.env; \
    apt-get update; \
    if ! apt-cache show "postgresql-client-${PG_MAJOR}" >/dev/null 2>&1; then \
      apt-get install -y --no-install-recommends ca-certificates curl gnupg; \
      install -d /usr/share/postgresql-common/pgdg; \
      curl -fsSL -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc \
        https://www.postgresql.org/media/keys/ACCC4CF8.asc; \
      echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt ${DEBIAN_SUITE}-pgdg main" \
        > /etc/apt/sources.list.d/pgdg.list; \
      apt-get update; \
    fi; \
    apt-get install -y --no-install-recommends $IMAGE_PACKAGES; \
    apt-get purge -y curl gnupg || true; apt-get autoremove -y; \
    rm -rf /var/lib/apt/lists/* /tmp/image.env
COPY --from=build /src/target/release/strongroom /usr/local/bin/strongroom
RUN echo 'nonroot:x:65532:65532:nonroot:/nonexistent:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'nonroot:x:65532:' >> /etc/group
USER 65532:65532
ENV PATH="/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    TMPDIR=/tmp
LABEL org.opencontainers.image.title="strongroom" \
      org.opencontainers.image.description="Backups of PostgreSQL and ClickHouse into Object-Lock S3, provably complete, untampered and restorable" \
      org.opencontainers.image.source="https://github.com/strongroom/strongroom" \
      org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["/usr/local/bin/strongroom"]
CMD ["--help"]
