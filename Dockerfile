# Multi-stage build: compile in the Rust image, run on distroless (no shell,
# no package manager) as a non-root numeric user.
#
# The base images are arguments so that a site with its own mirror (or an
# air-gapped build) can name equivalent images:
#   docker build --build-arg BUILDER_IMAGE=... --build-arg RUNTIME_IMAGE=... .
ARG BUILDER_IMAGE=docker.io/library/rust:1.95.0-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILDER_IMAGE} AS build
WORKDIR /src
# Dependencies first, in a layer of their own: a change to the sources
# rebuilds only this crate. Cargo.toml names the bench targets, so stand-ins
# for them (and for the crate) let cargo resolve and build the dependencies.
# The CSI plugin's .proto files, staged by scripts/protos (this stage has
# no Go to fetch them; see build.rs).
COPY target/proto /proto
ENV SBO_PROTO_DIR=/proto
COPY Cargo.toml Cargo.lock ./
COPY build.rs ./
COPY proto ./proto
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > benches/fleet.rs \
    && echo 'fn main() {}' > benches/protocol.rs \
    && echo 'fn main() {}' > benches/chaos.rs \
    && echo 'fn main() {}' > benches/signers.rs \
    && cargo build --release --locked --bin smart-backend-operator \
    && rm -rf src benches
COPY src ./src
COPY benches ./benches
COPY crds ./crds
# touch: the stand-ins above may look newer than the copied sources.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin smart-backend-operator \
    && cp target/release/smart-backend-operator /smart-backend-operator

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="smart-backend-operator" \
      org.opencontainers.image.description="Keeps SMART on FHIR Backend Services access tokens fresh in Kubernetes Secrets" \
      org.opencontainers.image.source="https://github.com/smart-backend-operator/smart-backend-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /smart-backend-operator /usr/local/bin/smart-backend-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/smart-backend-operator"]
CMD ["run"]
