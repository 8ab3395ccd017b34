//! Vault / OpenBao Transit: the private key stays in the key manager, which
//! signs the assertion's input and shows only the public key. Three calls:
//! log in (Kubernetes auth; or a token is given), read the key, sign.

pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use url::Url;

use super::{Place, RemoteKey, SignerError};
use crate::smart::keys::{PublicParams, read_public_key};
use crate::smart::{HttpClient, SecretString, SigningAlgorithm};

const TOKEN_HEADER: &str = "X-Vault-Token";

/// Which Transit key, where.
#[derive(Clone, Debug)]
pub struct TransitConfig {
    /// The server, e.g. `https://vault.vault.svc:8200`.
    pub address: Url,
    /// The Transit mount path, `transit` unless mounted elsewhere.
    pub mount: String,
    pub key: String,
}

/// A logged-in connection to one Transit key.
pub struct Transit {
    http: HttpClient,
    config: TransitConfig,
    token: SecretString,
}

impl std::fmt::Debug for Transit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transit")
            .field("address", &self.config.address.as_str())
            .field("mount", &self.config.mount)
            .field("key", &self.config.key)
            .finish_non_exhaustive()
    }
}

/// `address` + `v1` + the path's segments, each escaped.
fn endpoint(address: &Url, path: &[&str]) -> Result<Url, SignerError> {
    let mut url = address.clone();
    url.set_query(None);
    url.set_fragment(None);
    let bad = |reason: String| SignerError::Malformed {
        action: "build the key manager's URL".into(),
        reason,
    };
    url.path_segments_mut()
        .map_err(|()| bad(format!("{address} cannot carry a path")))?
        .pop_if_empty()
        .push("v1")
        .extend(
            path.iter()
                .flat_map(|p| p.split('/'))
                .filter(|s| !s.is_empty()),
        );
    Ok(url)
}

impl Transit {
    /// With a Vault token already in hand (checked names, no call made).
    pub fn with_token(
        http: HttpClient,
        config: TransitConfig,
        token: SecretString,
    ) -> Result<Self, SignerError> {
        let names = [
            ("the Transit mount", config.mount.as_str(), true),
            ("the Transit key", config.key.as_str(), false),
        ];
        for (what, value, slashes) in names {
            wire::check_path(what, value, slashes).map_err(SignerError::InvalidName)?;
        }
        Ok(Self {
            http,
            config,
            token,
        })
    }

    async fn call(
        &self,
        call: &wire::Call<'_>,
        url: &Url,
        body: Option<&serde_json::Value>,
    ) -> Result<Vec<u8>, SignerError> {
        send(&self.http, call, url, Some(&self.token), body).await
    }

    /// The key's type, versions and public keys.
    pub async fn read_key(&self) -> Result<wire::KeyInfo, SignerError> {
        let (mount, key) = (&self.config.mount, &self.config.key);
        let url = endpoint(&self.config.address, &[mount, "keys", key])?;
        let call = wire::Call {
            action: format!("read Transit key {key} at {mount}"),
            url: url.as_str(),
            grant: format!(
                r#"the Vault token in use needs a policy with path "{mount}/keys/{key}" {{ capabilities = ["read"] }}"#
            ),
            key: Some(key),
        };
        let body = self.call(&call, &url, None).await?;
        wire::key_info(&body).map_err(|reason| SignerError::Malformed {
            action: call.action,
            reason,
        })
    }

    /// One version of the key (the latest when `version` is None), ready
    /// to sign with `algorithm` (the key type's own when None). `kid`
    /// defaults to the RFC 7638 thumbprint, as for keys held here.
    pub async fn key(
        self: &Arc<Self>,
        algorithm: Option<SigningAlgorithm>,
        version: Option<u64>,
        kid: Option<String>,
    ) -> Result<RemoteKey, SignerError> {
        let info = self.read_key().await?;
        self.version_of(&info, algorithm, version, kid)
    }

    /// As [`Transit::key`], from the key's description already read.
    pub fn version_of(
        self: &Arc<Self>,
        info: &wire::KeyInfo,
        algorithm: Option<SigningAlgorithm>,
        version: Option<u64>,
        kid: Option<String>,
    ) -> Result<RemoteKey, SignerError> {
        let algorithm = self.algorithm_for(info, algorithm)?;
        let version = version.unwrap_or(info.latest_version);
        let pem = info
            .public_keys
            .get(&version)
            .ok_or_else(|| SignerError::KeyNotFound {
                key: format!("{} version {version}", self.config.key),
                url: self.config.address.to_string(),
                remedy: format!(
                    "the key's versions with a public key are {:?}; name one of them",
                    info.public_keys.keys().collect::<Vec<_>>()
                ),
            })?;
        let (_, public) = read_public_key(pem.as_bytes())?;
        let kid = kid.unwrap_or_else(|| public.thumbprint());
        Ok(self.signing(version, algorithm, public, kid))
    }

    /// The algorithm the key's type signs with, which must be `wanted`
    /// when that is given.
    pub fn algorithm_for(
        &self,
        info: &wire::KeyInfo,
        wanted: Option<SigningAlgorithm>,
    ) -> Result<SigningAlgorithm, SignerError> {
        let unusable = |wanted: String| SignerError::KeyTypeUnusable {
            key: self.config.key.clone(),
            kind: info.kind.clone(),
            wanted,
            remedy: "ES384 needs type ecdsa-p384, RS384 needs rsa-2048, rsa-3072 or rsa-4096"
                .into(),
        };
        let own = wire::algorithm_of(&info.kind)
            .filter(|_| info.supports_signing)
            .ok_or_else(|| unusable("ES384 or RS384".into()))?;
        match wanted {
            Some(wanted) if wanted != own => Err(unusable(wanted.to_string())),
            _ => Ok(own),
        }
    }

    /// `version`, whose public key is `public`, signing as `kid`.
    pub fn signing(
        self: &Arc<Self>,
        version: u64,
        algorithm: SigningAlgorithm,
        public: PublicParams,
        kid: String,
    ) -> RemoteKey {
        let place = Place::Transit {
            transit: Arc::clone(self),
            version,
        };
        RemoteKey::new(place, algorithm, kid, public)
    }

    pub(super) async fn sign(
        &self,
        version: u64,
        algorithm: SigningAlgorithm,
        input: &[u8],
    ) -> Result<Vec<u8>, SignerError> {
        let (mount, key) = (&self.config.mount, &self.config.key);
        let url = endpoint(&self.config.address, &[mount, "sign", key, "sha2-384"])?;
        let call = wire::Call {
            action: format!("sign with Transit key {key} at {mount}"),
            url: url.as_str(),
            grant: format!(
                r#"the Vault token in use needs a policy with path "{mount}/sign/{key}/sha2-384" {{ capabilities = ["update"] }}"#
            ),
            key: Some(key),
        };
        let body = wire::sign_request(algorithm, version, input);
        let answer = self.call(&call, &url, Some(&body)).await?;
        wire::signature(&answer, version).map_err(|reason| SignerError::Malformed {
            action: call.action,
            reason,
        })
    }
}

/// One call: the answer's body when it is a success, the error its status
/// and body mean otherwise.
async fn send(
    http: &HttpClient,
    call: &wire::Call<'_>,
    url: &Url,
    token: Option<&SecretString>,
    body: Option<&serde_json::Value>,
) -> Result<Vec<u8>, SignerError> {
    let response = http
        .json_call(url, token.map(|t| (TOKEN_HEADER, t)), body)
        .await
        .map_err(SignerError::http)?;
    if (200..300).contains(&response.status) {
        Ok(response.body)
    } else {
        Err(wire::error(call, response.status, &response.body))
    }
}

/// Kubernetes auth: a ServiceAccount token exchanged for a Vault token and
/// how long it lives (zero: no expiry).
pub async fn login(
    http: &HttpClient,
    address: &Url,
    mount: &str,
    role: &str,
    jwt: &SecretString,
) -> Result<(SecretString, Duration), SignerError> {
    for (what, value, slashes) in [("the auth mount", mount, true), ("the role", role, false)] {
        wire::check_path(what, value, slashes).map_err(SignerError::InvalidName)?;
    }
    let url = endpoint(address, &["auth", mount, "login"])?;
    let call = wire::Call {
        action: format!("log in with role {role} at auth/{mount}"),
        url: url.as_str(),
        grant: format!(
            "the role {role} must bind the operator's ServiceAccount (name and namespace) and the key manager must be allowed to create TokenReviews"
        ),
        key: None,
    };
    let body = serde_json::json!({"role": role, "jwt": jwt.expose()});
    let answer = send(http, &call, &url, None, Some(&body)).await?;
    let (token, lease) = wire::login(&answer).map_err(|reason| SignerError::Malformed {
        action: call.action,
        reason,
    })?;
    Ok((SecretString::new(token), lease))
}
