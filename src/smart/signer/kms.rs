//! AWS KMS: the private key stays in KMS, which signs the assertion's input
//! (`MessageType=RAW`) and shows only the public key (`GetPublicKey`).
//! Credentials come from the SDK's standard chain: a web identity (IRSA),
//! EKS Pod Identity, the environment or an instance profile. They live in
//! memory only and the SDK renews them before they expire.

pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use url::Url;

use super::{Place, RemoteKey, SignerError};
use crate::smart::SigningAlgorithm;
use crate::smart::keys::read_public_key;

/// How the operator reaches KMS: the installation's, never a resource's
/// (a resource that chose the endpoint could send the operator's signed
/// requests, session token included, to a host of its choosing).
#[derive(Clone, Debug)]
pub struct KmsSettings {
    /// The region; None: the standard chain's (`AWS_REGION`, profile).
    pub region: Option<String>,
    /// Another endpoint (a VPC endpoint, a test server); None: the
    /// standard one, or `AWS_ENDPOINT_URL_KMS`.
    pub endpoint: Option<Url>,
    /// A resource's key `<name>` is the alias
    /// `alias/<prefix>/<namespace>/<name>`.
    pub alias_prefix: String,
}

impl KmsSettings {
    /// The alias of a namespace's key: one namespace cannot name
    /// another's, and the operator's IAM policy can grant per namespace.
    pub fn alias(&self, namespace: &str, name: &str) -> String {
        format!("alias/{}/{namespace}/{name}", self.alias_prefix)
    }
}

/// Another KMS endpoint is HTTPS unless plain http is allowed
/// (`--insecure-allow-http`).
pub fn check_endpoint(url: &Url, allow_http: bool) -> Result<(), String> {
    if url.scheme() == "https" || allow_http {
        Ok(())
    } else {
        Err(format!(
            "--aws-kms-endpoint {url} is not HTTPS: use https, or pass --insecure-allow-http to call it anyway"
        ))
    }
}

/// The operator's KMS client, made at the first use (reading the standard
/// configuration is async) and shared by every client after that.
pub struct KmsSession {
    settings: KmsSettings,
    timeout: Duration,
    kms: tokio::sync::OnceCell<Arc<Kms>>,
}

impl KmsSession {
    pub fn new(settings: KmsSettings, timeout: Duration) -> Self {
        KmsSession {
            settings,
            timeout,
            kms: tokio::sync::OnceCell::new(),
        }
    }

    pub fn settings(&self) -> &KmsSettings {
        &self.settings
    }

    pub async fn kms(&self) -> &Arc<Kms> {
        self.kms
            .get_or_init(|| async {
                let (region, endpoint) = (&self.settings.region, &self.settings.endpoint);
                Arc::new(Kms::connect(region.clone(), endpoint.as_ref(), self.timeout).await)
            })
            .await
    }
}

/// A KMS client with the standard credential chain.
pub struct Kms {
    client: aws_sdk_kms::Client,
}

impl std::fmt::Debug for Kms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kms").finish_non_exhaustive()
    }
}

impl Kms {
    /// Reads the standard configuration (no call is made). Each call,
    /// retries included, ends within `timeout`.
    pub async fn connect(
        region: Option<String>,
        endpoint: Option<&Url>,
        timeout: Duration,
    ) -> Self {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .operation_timeout(timeout)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts);
        if let Some(region) = region {
            loader = loader.region(aws_config::Region::new(region));
        }
        let shared = loader.load().await;
        let mut config = aws_sdk_kms::config::Builder::from(&shared);
        if let Some(endpoint) = endpoint {
            config = config.endpoint_url(endpoint.as_str().trim_end_matches('/'));
        }
        Kms {
            client: aws_sdk_kms::Client::from_conf(config.build()),
        }
    }

    /// The key `key_id` (a key id, ARN, alias name or alias ARN), ready to
    /// sign with `algorithm` (the key's own when None). `kid` defaults to
    /// the RFC 7638 thumbprint, as for keys held here. The key signs by
    /// its id, so an alias moved later does not change what it signs with.
    pub async fn key(
        self: &Arc<Self>,
        key_id: &str,
        algorithm: Option<SigningAlgorithm>,
        kid: Option<String>,
    ) -> Result<RemoteKey, SignerError> {
        let action = format!("read the public key of AWS KMS key {key_id}");
        let answer = self.client.get_public_key().key_id(key_id).send().await;
        let out = answer.map_err(|e| failure(&action, key_id, "kms:GetPublicKey", &e))?;
        let malformed = |reason: &str| SignerError::Malformed {
            action: action.clone(),
            reason: reason.into(),
        };
        #[allow(deprecated)] // Some servers send only the older name.
        let spec = out
            .key_spec()
            .map(|s| s.as_str().to_string())
            .or_else(|| {
                out.customer_master_key_spec()
                    .map(|s| s.as_str().to_string())
            })
            .unwrap_or_default();
        let usage = out.key_usage().map(|u| u.as_str()).unwrap_or_default();
        let offered: Vec<&str> = out
            .signing_algorithms()
            .iter()
            .map(|a| a.as_str())
            .collect();
        let own = wire::algorithm_of(&spec, usage, &offered).ok_or_else(|| {
            SignerError::KeyTypeUnusable {
                key: key_id.to_string(),
                kind: format!("{spec} ({usage})"),
                wanted: algorithm.map_or("ES384 or RS384".into(), |a| a.to_string()),
                remedy: "ES384 needs a SIGN_VERIFY key of spec ECC_NIST_P384, RS384 one of RSA_2048, RSA_3072 or RSA_4096".into(),
            }
        })?;
        if let Some(wanted) = algorithm.filter(|w| *w != own) {
            return Err(SignerError::KeyTypeUnusable {
                key: key_id.to_string(),
                kind: spec,
                wanted: wanted.to_string(),
                remedy: format!("choose {own}, or a key of a spec that signs {wanted}"),
            });
        }
        let der = out.public_key().ok_or_else(|| malformed("no public key"))?;
        let (_, public) = read_public_key(der.as_ref())?;
        let id = out.key_id().ok_or_else(|| malformed("no key id"))?;
        let place = Place::Kms {
            kms: Arc::clone(self),
            key_id: id.to_string(),
            named: key_id.to_string(),
        };
        let kid = kid.unwrap_or_else(|| public.thumbprint());
        Ok(RemoteKey::new(place, own, kid, public))
    }

    /// A signature by the key `key_id` (`named` so by the user).
    pub(super) async fn sign(
        &self,
        key_id: &str,
        named: &str,
        algorithm: SigningAlgorithm,
        input: &[u8],
    ) -> Result<Vec<u8>, SignerError> {
        let action = format!("sign with AWS KMS key {named}");
        let answer = self
            .client
            .sign()
            .key_id(key_id)
            .message(Blob::new(input))
            .message_type(MessageType::Raw)
            .signing_algorithm(SigningAlgorithmSpec::from(wire::kms_algorithm(algorithm)))
            .send()
            .await;
        let out = answer.map_err(|e| failure(&action, named, "kms:Sign", &e))?;
        let signature = out.signature().map(|b| b.as_ref()).unwrap_or_default();
        wire::jose_signature(algorithm, signature)
            .map_err(|reason| SignerError::Malformed { action, reason })
    }
}

/// An SDK failure as a [`SignerError`]: its status, code and body are read
/// by [`wire::error`].
fn failure<E: ProvideErrorMetadata + std::error::Error + 'static>(
    action: &str,
    key: &str,
    permission: &str,
    e: &SdkError<E, aws_sdk_kms::config::http::HttpResponse>,
) -> SignerError {
    let response = e.raw_response();
    let body = response
        .and_then(|r| r.body().bytes())
        .map(|b| String::from_utf8_lossy(&b[..b.len().min(4096)]).into_owned())
        .unwrap_or_default();
    let network = match e {
        SdkError::TimeoutError(_) => true,
        SdkError::DispatchFailure(d) => d.is_io() || d.is_timeout(),
        _ => false,
    };
    // The SDK's description carries the raw answer; one line of it is
    // enough.
    let detail: String = DisplayErrorContext(e)
        .to_string()
        .chars()
        .take(400)
        .collect();
    let failed = wire::Failed {
        action,
        key,
        permission,
        status: response.map(|r| r.status().as_u16()),
        code: e.code(),
        message: e.message(),
        detail: &detail,
        network,
    };
    wire::error(&failed, &body)
}
