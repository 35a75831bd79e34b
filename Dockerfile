# loopd and loopd-bench in one small image.
#
# Build:  docker build -t loopd .
# Run:    docker run --rm -p 7007:7007 -p 9107:9107 loopd
#
# Stage 1 builds both binaries (loopd from the loopd-daemon package, loopd-bench) with the
# same command the README gives; stage 2 is a distroless runtime (glibc, CA certificates, a
# nonroot user, no shell).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --workspace --bins

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/loopd /usr/local/bin/loopd
COPY --from=build /src/target/release/loopd-bench /usr/local/bin/loopd-bench
# Inside a container, listen on every address; the admin endpoint serves the probes.
ENV LOOPD_LISTEN="echo=0.0.0.0:7007 line=0.0.0.0:7100 udp-echo=0.0.0.0:7007" \
    LOOPD_ADMIN="0.0.0.0:9107" \
    LOOPD_LOG_FORMAT="json"
EXPOSE 7007/tcp 7007/udp 7100/tcp 9107/tcp
USER nonroot
ENTRYPOINT ["/usr/local/bin/loopd"]
