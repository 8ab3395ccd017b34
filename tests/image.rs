//! The Dockerfile as a new user runs it: `docker build .` must find every
//! target Cargo.toml declares (a missing `benches/` once broke every build).

use std::path::Path;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// The names of the `[[bench]]` targets in Cargo.toml.
fn bench_names(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_bench = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bench = line == "[[bench]]";
        } else if in_bench && let Some(value) = line.strip_prefix("name = ") {
            names.push(value.trim_matches('"').to_string());
        }
    }
    names
}

#[test]
fn the_dockerfile_builds_every_target_that_cargo_toml_declares() {
    let manifest = read("Cargo.toml");
    let dockerfile = read("Dockerfile");
    let benches = bench_names(&manifest);
    assert!(!benches.is_empty(), "Cargo.toml declares bench targets");
    let build_stage = dockerfile
        .split("FROM ${RUNTIME_IMAGE}")
        .next()
        .expect("a build stage");
    let (dependencies, sources) = build_stage
        .split_once("COPY src ./src")
        .expect("the sources are copied after the dependency layer");
    for name in &benches {
        assert!(
            dependencies.contains(&format!("benches/{name}.rs")),
            "the dependency layer has a stand-in for the {name} bench"
        );
    }
    assert!(
        sources.contains("COPY benches ./benches"),
        "the benches are copied"
    );
    assert!(
        dependencies.contains("COPY Cargo.toml Cargo.lock ./")
            && !dependencies.contains("COPY src"),
        "dependencies build from the manifest alone, so a source change reuses them"
    );
    assert!(
        dependencies.contains("COPY build.rs ./") && dependencies.contains("SBO_PROTO_DIR"),
        "the gRPC code generation (build.rs, from the staged .proto files) is in the dependency layer"
    );
}

#[test]
fn the_base_images_are_arguments_with_public_defaults() {
    let dockerfile = read("Dockerfile");
    for (arg, default) in [
        ("BUILDER_IMAGE", "docker.io/library/rust:"),
        ("RUNTIME_IMAGE", "gcr.io/distroless/cc-debian12:nonroot"),
    ] {
        assert!(
            dockerfile.contains(&format!("ARG {arg}={default}")),
            "ARG {arg} defaults to {default}"
        );
        assert!(
            dockerfile.contains(&format!("FROM ${{{arg}}}")),
            "FROM uses {arg}"
        );
    }
    assert!(dockerfile.contains("USER 65532:65532"));
}
