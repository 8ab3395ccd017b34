//! `keygen` (a new private key and its public JWKS) and `jwks` (the public
//! JWKS of an existing key), for registering a client with an EHR by hand.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::smart::keys::DEFAULT_RSA_BITS;
use crate::smart::{PrivateKey, SigningAlgorithm};

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Signing algorithm the key is for.
    #[arg(long, value_parser = parse_algorithm)]
    pub alg: SigningAlgorithm,
    /// RSA modulus size for RS384 keys: 2048, 3072 or 4096.
    #[arg(long, default_value_t = DEFAULT_RSA_BITS)]
    pub rsa_bits: usize,
    /// Key id to publish; default: the RFC 7638 thumbprint of the public key.
    #[arg(long)]
    pub kid: Option<String>,
    /// Where to write the private key (PKCS#8 PEM, mode 0600). Refuses to
    /// overwrite an existing file.
    #[arg(long)]
    pub private_key_out: PathBuf,
}

#[derive(Debug, Args)]
pub struct JwksArgs {
    #[command(flatten)]
    pub key: super::signer::KeyArgs,
    /// Algorithm to publish; default: the one the key type implies.
    #[arg(long, value_parser = parse_algorithm)]
    pub alg: Option<SigningAlgorithm>,
    /// Key id to publish; default: the RFC 7638 thumbprint.
    #[arg(long)]
    pub kid: Option<String>,
    /// Allow a plain http key manager address (development servers only).
    #[arg(long)]
    pub insecure_allow_http: bool,
}

pub(crate) fn parse_algorithm(value: &str) -> Result<SigningAlgorithm, String> {
    value
        .parse()
        .map_err(|e: crate::smart::algorithm::UnsupportedAlgorithm| e.to_string())
}

pub fn keygen(args: &KeygenArgs) -> anyhow::Result<()> {
    let key = PrivateKey::generate(args.alg, args.rsa_bits)?;
    let pem = key.to_pkcs8_pem()?;
    let signing = key.into_signing_key(Some(args.alg), args.kid.clone())?;
    write_private(&args.private_key_out, pem.as_bytes())?;
    println!("{}", pretty(&signing.public_jwks())?);
    Ok(())
}

/// The public JWK Set of a key file or of a Transit key (what to register
/// with the EHR).
pub async fn jwks(args: &JwksArgs) -> anyhow::Result<()> {
    let held =
        super::signer::held_key(&args.key, args.insecure_allow_http, args.kid.clone()).await?;
    println!("{}", pretty(&held.bind(args.alg)?.public_jwks())?);
    Ok(())
}

fn pretty(value: &impl serde::Serialize) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)?)
}

/// Creates the file with mode 0600 from the start, so the key is never
/// readable by others, not even for a moment.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(|| {
        format!(
            "could not create {} (it must not exist yet)",
            path.display()
        )
    })?;
    file.write_all(bytes)
        .with_context(|| format!("could not write {}", path.display()))?;
    Ok(())
}
