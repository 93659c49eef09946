# The self-hosted server as a container: a static (musl) binary built on
# Alpine, copied into a distroless image (CA certificates, no shell, non-root).
#   docker build -t hailuo-gateway .
#   docker run -p 8080:8080 --stop-timeout 120 hailuo-gateway
# CI cannot run Docker; it builds the same static musl binary and runs the
# end-to-end suite against it (README, "Self-hosting").

FROM rust:1-alpine AS build
# C toolchain for the C built from source: libopus (cmake), LAME (its
# configure script and make) and ring's few C and assembly files (cc).
RUN apk add --no-cache build-base cmake linux-headers
WORKDIR /src
COPY . .
# The `server` profile: release settings, and a panic costs one request, not
# every request in flight (Cargo.toml says why Lambda's release profile aborts).
RUN cargo build --profile server --locked -p server \
 && cp target/server/gateway /gateway \
 && mkdir /data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /gateway /gateway
# Where a tokens file and its state file live (a volume; docs/self-hosting.md):
# owned by the non-root user, so a named volume starts writable.
COPY --from=build --chown=65532:65532 /data /data
# Listen on 0.0.0.0:$PORT; SIGTERM drains requests in flight (SHUTDOWN_TIMEOUT_SECONDS).
ENV PORT=8080
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["/gateway"]
