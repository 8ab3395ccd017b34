# Multi-stage build: compile in the official Rust image, run on distroless
# (no shell, no package manager) as a non-root numeric user.
FROM docker.io/library/rust:1.95.0-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crds ./crds
RUN cargo build --release --locked --bin smart-backend-operator \
    && cp target/release/smart-backend-operator /smart-backend-operator

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="smart-backend-operator" \
      org.opencontainers.image.description="Keeps SMART on FHIR Backend Services access tokens fresh in Kubernetes Secrets" \
      org.opencontainers.image.source="https://github.com/smart-backend-operator/smart-backend-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /smart-backend-operator /usr/local/bin/smart-backend-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/smart-backend-operator"]
CMD ["run"]
