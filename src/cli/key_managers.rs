//! The key managers an installation can sign with: Vault / OpenBao
//! Transit and AWS KMS. The installation names the server, the login and
//! the credentials; a resource names only its key, so no tenant can send
//! the operator's credential elsewhere.

use clap::Args;
use url::Url;

use crate::smart::signer::KmsSettings;

/// Vault / OpenBao, for clients that sign with a Transit key
/// (`spec.signing.vaultTransit`). The installation names the server and
/// the login; a resource names only its key, so no tenant can send the
/// operator's credential elsewhere.
#[derive(Clone, Debug, Args)]
pub struct VaultArgs {
    /// The Vault or OpenBao server, e.g. https://vault.vault.svc:8200.
    /// Unset: clients cannot sign with Transit keys.
    #[arg(long, env = "SBO_VAULT_ADDRESS")]
    pub vault_address: Option<Url>,
    /// Where Transit is mounted.
    #[arg(long, env = "SBO_VAULT_TRANSIT_MOUNT", default_value = "transit")]
    pub vault_transit_mount: String,
    /// The Kubernetes auth role the operator logs in with.
    #[arg(long, env = "SBO_VAULT_ROLE")]
    pub vault_role: Option<String>,
    /// Where the Kubernetes auth method is mounted.
    #[arg(long, env = "SBO_VAULT_AUTH_MOUNT", default_value = "kubernetes")]
    pub vault_auth_mount: String,
    /// The ServiceAccount token for the Kubernetes login: a projected token
    /// with Vault's audience (the chart mounts one), read at each login.
    #[arg(
        long,
        env = "SBO_VAULT_JWT_FILE",
        default_value = "/var/run/secrets/smartbackend.dev/vault/token"
    )]
    pub vault_jwt_file: std::path::PathBuf,
    /// Log in with a Vault token from this file instead of a role
    /// (development and tests).
    #[arg(long, env = "SBO_VAULT_TOKEN_FILE", conflicts_with = "vault_role")]
    pub vault_token_file: Option<std::path::PathBuf>,
    /// PEM bundle of the CAs that issued Vault's certificate.
    #[arg(long, env = "SBO_VAULT_CA_BUNDLE")]
    pub vault_ca_bundle: Option<std::path::PathBuf>,
}

impl VaultArgs {
    /// The Vault settings, or why they are incomplete.
    pub fn settings(&self) -> anyhow::Result<Option<crate::smart::signer::VaultSettings>> {
        use crate::smart::signer::{VaultLogin, VaultSettings};
        let Some(address) = &self.vault_address else {
            return Ok(None);
        };
        let login = match (&self.vault_role, &self.vault_token_file) {
            (Some(role), _) => VaultLogin::Kubernetes {
                mount: self.vault_auth_mount.clone(),
                role: role.clone(),
                jwt_file: self.vault_jwt_file.clone(),
            },
            (None, Some(path)) => VaultLogin::TokenFile(path.clone()),
            (None, None) => anyhow::bail!(
                "--vault-address is set but not how to log in: set --vault-role (Kubernetes auth) or --vault-token-file"
            ),
        };
        let ca_bundle_pem =
            super::read_optional(self.vault_ca_bundle.as_deref(), "the Vault CA bundle")?;
        Ok(Some(VaultSettings {
            address: address.clone(),
            transit_mount: self.vault_transit_mount.clone(),
            login,
            ca_bundle_pem,
        }))
    }
}

/// AWS KMS, for clients that sign with a KMS key (`spec.signing.awsKms`).
/// Credentials come from the SDK's standard chain: a web identity (IRSA),
/// EKS Pod Identity, the environment or an instance profile.
#[derive(Clone, Debug, Args)]
pub struct AwsArgs {
    /// Let clients sign with AWS KMS keys.
    #[arg(long, env = "SBO_AWS_KMS")]
    pub aws_kms: bool,
    /// The region; default: the standard chain's (AWS_REGION).
    #[arg(long, env = "SBO_AWS_REGION")]
    pub aws_region: Option<String>,
    /// Another KMS endpoint, e.g. a VPC endpoint; default: the region's
    /// (or AWS_ENDPOINT_URL_KMS).
    #[arg(long, env = "SBO_AWS_KMS_ENDPOINT")]
    pub aws_kms_endpoint: Option<Url>,
    /// A client's key <name> is the alias alias/<prefix>/<namespace>/<name>:
    /// grant the operator kms:Sign and kms:GetPublicKey on the keys these
    /// aliases name.
    #[arg(long, env = "SBO_AWS_KMS_ALIAS_PREFIX", default_value = "smartbackend")]
    pub aws_kms_alias_prefix: String,
}

impl AwsArgs {
    /// The KMS settings, or why they cannot work.
    pub fn settings(&self, allow_http: bool) -> anyhow::Result<Option<KmsSettings>> {
        if !self.aws_kms {
            return Ok(None);
        }
        let prefix = self.aws_kms_alias_prefix.trim_matches('/');
        crate::smart::signer::kms::wire::check_alias(&format!("alias/{prefix}/namespace/key"))
            .map_err(|e| anyhow::anyhow!("--aws-kms-alias-prefix {prefix:?}: {e}"))?;
        anyhow::ensure!(
            prefix.len() <= 100,
            "--aws-kms-alias-prefix is longer than 100 characters"
        );
        if let Some(url) = &self.aws_kms_endpoint {
            crate::smart::signer::kms::check_endpoint(url, allow_http)
                .map_err(anyhow::Error::msg)?;
        }
        let region = self.aws_region.clone().filter(|r| !r.trim().is_empty());
        if let Some(region) = &region {
            let fine = region.len() <= 32
                && region
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            anyhow::ensure!(
                fine,
                "--aws-region {region:?} is not a region name like eu-west-1"
            );
        }
        Ok(Some(KmsSettings {
            region,
            endpoint: self.aws_kms_endpoint.clone(),
            alias_prefix: prefix.to_string(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(prefix: &str, endpoint: Option<&str>, region: Option<&str>) -> AwsArgs {
        AwsArgs {
            aws_kms: true,
            aws_region: region.map(Into::into),
            aws_kms_endpoint: endpoint.map(|e| e.parse().unwrap()),
            aws_kms_alias_prefix: prefix.into(),
        }
    }

    #[test]
    fn the_kms_settings_are_the_installations_and_checked() {
        let fine = args(
            "/smartbackend/",
            Some("https://kms.vpce.example"),
            Some("eu-west-1"),
        );
        let settings = fine.settings(false).unwrap().unwrap();
        assert_eq!(
            settings.alias("team-a", "billing"),
            "alias/smartbackend/team-a/billing"
        );
        let off = AwsArgs {
            aws_kms: false,
            ..fine
        };
        assert!(off.settings(false).unwrap().is_none());
        let http = args("sbo", Some("http://127.0.0.1:4566"), None);
        assert!(
            http.settings(false)
                .unwrap_err()
                .to_string()
                .contains("not HTTPS")
        );
        assert!(http.settings(true).is_ok());
        for prefix in ["aws", "a b", "x.y"] {
            assert!(
                args(prefix, None, None).settings(false).is_err(),
                "{prefix}"
            );
        }
        assert!(args("sbo", None, Some("EU West")).settings(false).is_err());
    }
}
