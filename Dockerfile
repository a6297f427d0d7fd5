# syntax=docker/dockerfile:1
#
# One image, three binaries: /usr/local/bin/vc-controller, vc-webhook and vc-clustertree.
# The chart runs it as ghcr.io/kosmos-io/kosmos-vc:<appVersion> and picks the binary with
# `command:`, so the image needs no entrypoint of its own; each tenant's clustertree
# Deployment runs the same image with `command: [vc-clustertree]`.
#
#   docker build -t ghcr.io/kosmos-io/kosmos-vc:0.1.0 .

# The release rust-toolchain.toml pins, so the image is built with the compiler CI tests.
ARG RUST_IMAGE=rust:1.95.0-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS builder
WORKDIR /src
# The whole workspace: cargo resolves every member's manifest (and --locked checks
# Cargo.lock) even when building two packages. .dockerignore keeps target/ and .git out.
COPY . .
# The cache mounts keep the registry and incremental artifacts between builds; the
# binaries are copied out in the same step because the target cache is not in the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p vc-controller -p vc-webhook -p vc-clustertree \
 && install -D -m 0755 target/release/vc-controller /out/vc-controller \
 && install -D -m 0755 target/release/vc-webhook /out/vc-webhook \
 && install -D -m 0755 target/release/vc-clustertree /out/vc-clustertree

# distroless/cc: glibc and libgcc for the Rust binaries, CA certificates, no shell, no
# package manager. The :nonroot tag runs as 65532:65532, the user the chart's
# securityContext expects.
FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="kosmos-vc" \
      org.opencontainers.image.description="kosmos-vc controller, admission webhook and clustertree" \
      org.opencontainers.image.source="https://github.com/kosmos-io/kosmos-vc" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
COPY --from=builder /out/vc-controller /out/vc-webhook /out/vc-clustertree /usr/local/bin/
USER 65532:65532
# The controller's probe/metrics port and the webhook's HTTPS port.
EXPOSE 8080 8443
CMD ["/usr/local/bin/vc-controller"]
