//! The key a one-shot command signs with: a private key file, or a key
//! that stays in Vault / OpenBao Transit or in AWS KMS.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use url::Url;

use crate::smart::signer::session::key_manager_http;
use crate::smart::signer::{Kms, RemoteKey, Transit, TransitConfig, kms};
use crate::smart::{HttpPolicy, PrivateKey, SecretString, SigningAlgorithm, SigningKey};

/// Where the private key is. Exactly one of `--key`, `--vault-transit-key`
/// and `--aws-kms-key`.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// Private key file: PKCS#8, PKCS#1 or SEC1 PEM, or a private JWK.
    #[arg(long, required_unless_present_any = ["vault_transit_key", "aws_kms_key"])]
    pub key: Option<PathBuf>,
    /// Sign with this Vault / OpenBao Transit key instead of a key file;
    /// the private key never leaves the key manager. The token is read from
    /// VAULT_TOKEN (or BAO_TOKEN), or from --vault-token-file.
    #[arg(long, conflicts_with_all = ["key", "aws_kms_key"], requires = "vault_address")]
    pub vault_transit_key: Option<String>,
    /// The Vault or OpenBao server, e.g. https://vault.example.org:8200.
    #[arg(long, env = "VAULT_ADDR")]
    pub vault_address: Option<Url>,
    /// Where Transit is mounted.
    #[arg(long, default_value = "transit")]
    pub vault_transit_mount: String,
    /// The key version to sign with; default: the latest.
    #[arg(long)]
    pub vault_transit_version: Option<u64>,
    /// A file holding the Vault token (instead of VAULT_TOKEN).
    #[arg(long)]
    pub vault_token_file: Option<PathBuf>,
    /// PEM bundle of the CAs that issued the key manager's certificate, when
    /// it is not publicly trusted.
    #[arg(long)]
    pub vault_ca_bundle: Option<PathBuf>,
    /// Sign with this AWS KMS key (key id, ARN, alias/NAME or alias ARN)
    /// instead of a key file; the private key never leaves KMS.
    /// Credentials and region come from the standard AWS chain
    /// (environment, profile, web identity, instance profile).
    #[arg(long, conflicts_with = "key")]
    pub aws_kms_key: Option<String>,
    /// The AWS region (instead of AWS_REGION or the profile's).
    #[arg(long)]
    pub aws_region: Option<String>,
    /// Another KMS endpoint, e.g. a VPC endpoint (instead of
    /// AWS_ENDPOINT_URL_KMS).
    #[arg(long)]
    pub aws_kms_endpoint: Option<Url>,
}

/// The key in hand, before the algorithm is chosen.
pub enum HeldKey {
    /// A key from a file, with the `kid` to publish (None: the thumbprint).
    File(PrivateKey, Option<String>),
    /// In Transit or KMS.
    Remote(RemoteKey),
}

impl HeldKey {
    /// The algorithm the key itself signs with.
    pub fn algorithm(&self) -> SigningAlgorithm {
        match self {
            HeldKey::File(key, _) => key.algorithm(),
            HeldKey::Remote(key) => key.algorithm(),
        }
    }

    /// Bound to `algorithm` (None: the key's own), ready to sign once.
    pub fn bind(self, algorithm: Option<SigningAlgorithm>) -> anyhow::Result<SigningKey> {
        match self {
            HeldKey::File(key, kid) => {
                Ok(key.into_signing_key(algorithm, kid)?.for_one_signature())
            }
            HeldKey::Remote(key) => {
                let wanted = algorithm.unwrap_or(key.algorithm());
                anyhow::ensure!(
                    wanted == key.algorithm(),
                    "{wanted} was chosen, but the key manager's key signs {}: choose --alg {} or a key of another type",
                    key.algorithm(),
                    key.algorithm()
                );
                Ok(SigningKey::remote(key))
            }
        }
    }
}

fn vault_token(args: &KeyArgs) -> anyhow::Result<SecretString> {
    if let Some(path) = &args.vault_token_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read the Vault token file {}", path.display()))?;
        return Ok(SecretString::new(text.trim()));
    }
    ["VAULT_TOKEN", "BAO_TOKEN"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
        .map(|token| SecretString::new(token.trim()))
        .context("no Vault token: set VAULT_TOKEN (or BAO_TOKEN), or pass --vault-token-file")
}

/// Reads the key file, or reads the key manager's public half (its `kid`
/// is the RFC 7638 thumbprint unless `kid` is given).
/// The key manager is the one the person running the command names, so
/// its host is allowed as named (a port-forward on loopback included);
/// `allow_http` is the command's `--insecure-allow-http`.
pub async fn held_key(
    args: &KeyArgs,
    allow_http: bool,
    kid: Option<String>,
) -> anyhow::Result<HeldKey> {
    if let Some(key_id) = &args.aws_kms_key {
        let endpoint = args.aws_kms_endpoint.as_ref();
        if let Some(url) = endpoint {
            kms::check_endpoint(url, allow_http).map_err(anyhow::Error::msg)?;
        }
        let timeout = HttpPolicy::default().request_timeout;
        let kms = Kms::connect(args.aws_region.clone(), endpoint, timeout).await;
        let key = Arc::new(kms).key(key_id, None, kid).await?;
        return Ok(HeldKey::Remote(key));
    }
    let Some(name) = &args.vault_transit_key else {
        let path = args
            .key
            .as_ref()
            .context("--key, --vault-transit-key or --aws-kms-key is required")?;
        return Ok(HeldKey::File(super::read_key_file(path)?, kid));
    };
    let address = args
        .vault_address
        .clone()
        .context("--vault-address (or VAULT_ADDR) is required with --vault-transit-key")?;
    let ca_bundle = super::read_optional(args.vault_ca_bundle.as_deref(), "the Vault CA bundle")?;
    let policy = HttpPolicy {
        allow_http,
        ..HttpPolicy::default()
    };
    let http = key_manager_http(&address, ca_bundle, &policy)?;
    let config = TransitConfig {
        address,
        mount: args.vault_transit_mount.clone(),
        key: name.clone(),
    };
    let transit = Transit::with_token(http, config, vault_token(args)?)?;
    let key = Arc::new(transit)
        .key(None, args.vault_transit_version, kid)
        .await?;
    Ok(HeldKey::Remote(key))
}
