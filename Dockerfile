# Klaxon in a container: a release build in a Rust image, then only the binary on a slim base.
#   docker build -t klaxon .
#   docker run -p 8080:8080 -e KLAXON_API_TOKEN=change-me -v klaxon-data:/data klaxon
# Configuration: mount a file at /etc/klaxon/klaxon.toml (optional; without it Klaxon runs on
# environment variables). Data: the embedded SQLite store lives in the /data volume.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p klaxon \
 && strip target/release/klaxon

FROM debian:bookworm-slim
# CA roots for HTTPS providers; nothing else: `klaxon health` is the health check's client.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin klaxon \
 && mkdir -p /data /etc/klaxon \
 && chown klaxon:klaxon /data
COPY --from=build /src/target/release/klaxon /usr/local/bin/klaxon
USER klaxon
# The default store `sqlite://klaxon.db` is relative to the working directory: the volume.
WORKDIR /data
VOLUME ["/data"]
# Reachable from outside the container; Klaxon then refuses to start without KLAXON_API_TOKEN
# (or server.api_token), so the API is never open by accident.
ENV KLAXON_CONFIG=/etc/klaxon/klaxon.toml \
    KLAXON_LISTEN=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["klaxon", "health"]
# SIGTERM: intake stops, sends in flight get server.shutdown_grace (10 s), the rest stays queued.
STOPSIGNAL SIGTERM
ENTRYPOINT ["klaxon"]
CMD ["serve"]
