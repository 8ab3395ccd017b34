//! Generates the gRPC code for the CSI node plugin (`csi-node`): the CSI
//! spec's `csi.proto` and the kubelet's plugin-registration `api.proto`,
//! compiled with protox (no `protoc` needed).
//!
//! The .proto files are not copied into this repository: they are read from
//! the Go modules that publish them, at the versions pinned (with their
//! checksums) in `proto/go.mod` and `proto/go.sum`, through `go mod
//! download`. A build without Go (the image's) names a directory that holds
//! both files in `SBO_PROTO_DIR`; `scripts/image` prepares one.

use std::path::{Path, PathBuf};
use std::process::Command;

const CSI: (&str, &str) = ("github.com/container-storage-interface/spec", "csi.proto");
const REGISTRATION: (&str, &str) = ("k8s.io/kubelet", "pkg/apis/pluginregistration/v1/api.proto");

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=proto/go.mod");
    println!("cargo:rerun-if-env-changed=SBO_PROTO_DIR");
    let (csi, registration) = match std::env::var_os("SBO_PROTO_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            (dir.join("csi.proto"), dir.join("pluginregistration.proto"))
        }
        None => {
            let dirs = module_dirs();
            let dir_of = |module: &str| {
                dirs.iter()
                    .find(|(path, _)| path == module)
                    .map(|(_, dir)| PathBuf::from(dir))
                    .unwrap_or_else(|| panic!("`go mod download` did not report {module}"))
            };
            (
                dir_of(CSI.0).join(CSI.1),
                dir_of(REGISTRATION.0).join(REGISTRATION.1),
            )
        }
    };
    for file in [&csi, &registration] {
        assert!(
            file.is_file(),
            "{} is missing: set SBO_PROTO_DIR to a directory holding csi.proto and pluginregistration.proto, or build where `go` can download the modules in proto/go.mod",
            file.display()
        );
    }
    compile(&csi);
    compile(&registration);
}

/// (module path, directory) of each module pinned in proto/go.mod.
fn module_dirs() -> Vec<(String, String)> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let output = Command::new("go")
        .args(["mod", "download", "-json", CSI.0, REGISTRATION.0])
        .current_dir(manifest.join("proto"))
        .output()
        .unwrap_or_else(|e| {
            panic!("running `go mod download` for the CSI and kubelet .proto files failed ({e}): install Go, or set SBO_PROTO_DIR (see build.rs)")
        });
    assert!(
        output.status.success(),
        "`go mod download` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("go prints UTF-8");
    serde_json::Deserializer::from_str(&text)
        .into_iter::<serde_json::Value>()
        .filter_map(Result::ok)
        .filter_map(|m| {
            let path = m.get("Path")?.as_str()?.to_string();
            let dir = m.get("Dir")?.as_str()?.to_string();
            Some((path, dir))
        })
        .collect()
}

fn compile(file: &Path) {
    println!("cargo:rerun-if-changed={}", file.display());
    let dir = file.parent().expect("a directory");
    let descriptors = protox::compile([file], [dir])
        .unwrap_or_else(|e| panic!("compiling {}: {e}", file.display()));
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .compile_fds(descriptors)
        .unwrap_or_else(|e| panic!("generating code for {}: {e}", file.display()));
}
