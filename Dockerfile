# Build: a full Rust toolchain; the runtime image gets only the binary and data files.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config ./config
COPY providers ./providers
COPY policies ./policies
# The workspace's other members and benches must exist for cargo to read the manifest.
COPY benches ./benches
COPY load-tests/Cargo.toml ./load-tests/Cargo.toml
COPY load-tests/src ./load-tests/src
RUN cargo build --release --locked --bin switchyard

FROM debian:bookworm-slim
# ca-certificates for TLS to providers; curl for the health check.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /app --shell /usr/sbin/nologin switchyard
WORKDIR /app
COPY --from=build /src/target/release/switchyard /usr/local/bin/switchyard
COPY config ./config
COPY providers ./providers
# Admins may edit policies through PUT /admin/policies: the folder is the service's own.
COPY --chown=switchyard policies ./policies
# SQLite (keys, usage) lives in /app/data unless SWITCHYARD_DATABASE_URL points elsewhere;
# mount a volume there to keep it.
RUN mkdir -p /app/data && chown switchyard /app/data
VOLUME /app/data
USER switchyard
ENV SWITCHYARD_LISTEN=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["switchyard"]
CMD ["serve", "--config", "config/prod.toml"]
