//! The operator's one Vault login, shared by every client that signs in
//! Transit: logged in on first use, again when half the token's lease has
//! passed, and again after the key manager refused it (a revoked or
//! expired token). The Vault token lives in memory only.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use url::Url;

use super::SignerError;
use super::transit::{self, Transit, TransitConfig};
use crate::smart::{DestinationPolicy, HttpClient, HttpError, HttpPolicy, SecretString};

/// How the operator proves who it is to Vault.
#[derive(Clone, Debug)]
pub enum VaultLogin {
    /// Kubernetes auth with a ServiceAccount token read from `jwt_file` at
    /// each login: a projected token with its own audience, which the
    /// kubelet renews, so the operator's API-server credential is never
    /// sent.
    Kubernetes {
        mount: String,
        role: String,
        jwt_file: PathBuf,
    },
    /// A Vault token read from a file at each login (development, tests).
    TokenFile(PathBuf),
}

/// Where Vault is and how to log in.
#[derive(Clone, Debug)]
pub struct VaultSettings {
    pub address: Url,
    /// Where Transit is mounted (`transit`).
    pub transit_mount: String,
    pub login: VaultLogin,
    /// Extra CAs (PEM) for a key manager behind a private CA.
    pub ca_bundle_pem: Option<Vec<u8>>,
}

/// A logged-in token and when to log in again.
#[derive(Clone)]
struct Held {
    token: SecretString,
    renew_at: Option<SystemTime>,
}

/// The shared login.
pub struct VaultSession {
    http: HttpClient,
    settings: VaultSettings,
    held: Mutex<Option<Held>>,
    /// One login at a time: a burst of clients waits for the first.
    login: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for VaultSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultSession")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The client for a key manager at `address`: `policy`'s timeouts and http
/// rule, the key manager's own CAs, no proxy, and its host allowed as the
/// installation (or the person at the command line) names it, since it may
/// be in the cluster or behind a port-forward.
pub fn key_manager_http(
    address: &Url,
    ca_bundle_pem: Option<Vec<u8>>,
    policy: &HttpPolicy,
) -> Result<HttpClient, HttpError> {
    HttpClient::new(HttpPolicy {
        extra_roots_pem: ca_bundle_pem,
        destinations: DestinationPolicy {
            allow_hosts: address.host_str().map(str::to_string).into_iter().collect(),
            block_private: false,
        },
        proxy: None,
        ..policy.clone()
    })
}

/// When to log in again: halfway through the lease (None: never).
pub fn renew_at(logged_in: SystemTime, lease: Duration) -> Option<SystemTime> {
    (!lease.is_zero()).then(|| crate::checked_time::after(logged_in, lease / 2))
}

fn read_file(what: &str, path: &PathBuf) -> Result<SecretString, SignerError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        SignerError::Credential(format!(
            "the {what} file {} could not be read: {e}; check the operator's volume for it",
            path.display()
        ))
    })?;
    Ok(SecretString::new(text.trim()))
}

impl VaultSession {
    /// The session of an operator whose other requests follow `policy`.
    pub fn for_operator(settings: VaultSettings, policy: &HttpPolicy) -> Result<Self, HttpError> {
        let ca = settings.ca_bundle_pem.clone();
        let http = key_manager_http(&settings.address, ca, policy)?;
        Ok(Self {
            http,
            settings,
            held: Mutex::new(None),
            login: tokio::sync::Mutex::new(()),
        })
    }

    fn current(&self, now: SystemTime) -> Option<SecretString> {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.as_ref()
            .filter(|h| h.renew_at.is_none_or(|at| now < at))
            .map(|h| h.token.clone())
    }

    /// Forgets the token after the key manager refused it, so that the
    /// next use logs in again.
    pub fn forget(&self) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    async fn token(&self) -> Result<SecretString, SignerError> {
        if let Some(token) = self.current(SystemTime::now()) {
            return Ok(token);
        }
        let _one = self.login.lock().await;
        if let Some(token) = self.current(SystemTime::now()) {
            return Ok(token);
        }
        let now = SystemTime::now();
        let held = match &self.settings.login {
            VaultLogin::TokenFile(path) => Held {
                token: read_file("Vault token", path)?,
                // Read again now and then: the file may be replaced.
                renew_at: Some(crate::checked_time::after(now, Duration::from_secs(60))),
            },
            VaultLogin::Kubernetes {
                mount,
                role,
                jwt_file,
            } => {
                let jwt = read_file("ServiceAccount token", jwt_file)?;
                let address = &self.settings.address;
                let (token, lease) = transit::login(&self.http, address, mount, role, &jwt).await?;
                Held {
                    token,
                    renew_at: renew_at(now, lease),
                }
            }
        };
        let token = held.token.clone();
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = Some(held);
        Ok(token)
    }

    /// The Transit key `key`, with a current login.
    pub async fn transit(&self, key: &str) -> Result<Arc<Transit>, SignerError> {
        let token = self.token().await?;
        let config = TransitConfig {
            address: self.settings.address.clone(),
            mount: self.settings.transit_mount.clone(),
            key: key.to_string(),
        };
        Ok(Arc::new(Transit::with_token(
            self.http.clone(),
            config,
            token,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_is_renewed_halfway_through_its_lease() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(
            renew_at(t, Duration::from_secs(3600)),
            Some(t + Duration::from_secs(1800))
        );
        assert_eq!(renew_at(t, Duration::ZERO), None);
        // A lease no clock can hold is checked, not overflowed.
        assert!(renew_at(t, Duration::MAX).is_some());
    }
}
