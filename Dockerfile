# The strongroom agent image: the static-ish Rust binary plus the pg_dump/psql of the
# PostgreSQL major version it backs up (pg_dump must be >= the server's major version, and its
# plain SQL should load into the same major on restore, so the client matches the server).
# Runs as a non-root user and needs no writable root filesystem (only /tmp, an emptyDir).
#
#   docker build --build-arg PG_MAJOR=15 -t strongroom:dev .

ARG PG_MAJOR=15

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY agent ./agent
RUN cargo build --release --locked --bin strongroom \
 && strip target/release/strongroom

FROM debian:bookworm-slim
ARG PG_MAJOR
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates curl gnupg; \
    install -d /usr/share/postgresql-common/pgdg; \
    curl -fsSL -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc \
      https://www.postgresql.org/media/keys/ACCC4CF8.asc; \
    echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main" \
      > /etc/apt/sources.list.d/pgdg.list; \
    apt-get update; \
    apt-get install -y --no-install-recommends "postgresql-client-${PG_MAJOR}"; \
    apt-get purge -y curl gnupg; apt-get autoremove -y; \
    rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/strongroom /usr/local/bin/strongroom
# 65532: the conventional "nonroot" uid; no home, no shell needed.
USER 65532:65532
ENV PATH="/usr/lib/postgresql/${PG_MAJOR}/bin:${PATH}" \
    TMPDIR=/tmp
ENTRYPOINT ["/usr/local/bin/strongroom"]
CMD ["--help"]
