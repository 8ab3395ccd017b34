//! The commands: `run`, `sandbox`, the one-shot `keygen`, `jwks` and
//! `token`, `check` (is an installation healthy; the chart's `helm test`),
//! and the kubectl plugin. Each has a clap argument struct and a
//! `run` function; `main.rs` only dispatches.

pub mod check;
pub mod csi_node;
pub mod delivery;
pub mod key_managers;
pub mod keys;
pub mod plugin;
pub mod run;
pub mod sandbox;
pub mod signer;
pub mod token;

use std::path::Path;

use anyhow::Context;

use crate::smart::PrivateKey;

/// The bytes of `path`, when one is given; `what` names it in the error.
pub(crate) fn read_optional(path: Option<&Path>, what: &str) -> anyhow::Result<Option<Vec<u8>>> {
    path.map(|path| {
        std::fs::read(path).with_context(|| format!("could not read {what} {}", path.display()))
    })
    .transpose()
}

/// Reads a private key file in any supported format.
pub(crate) fn read_key_file(path: &Path) -> anyhow::Result<PrivateKey> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("could not read the key file {}", path.display()))?;
    PrivateKey::parse(&bytes)
        .with_context(|| format!("the key file {} is not usable", path.display()))
}
