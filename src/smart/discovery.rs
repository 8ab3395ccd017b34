//! SMART discovery: `{fhirBaseUrl}/.well-known/smart-configuration`, read
//! leniently because real EHRs publish imperfect metadata. Only what makes a
//! token request impossible is an error; everything else is a warning.

use std::fmt;

use serde_json::Value;
use url::Url;

use super::SigningAlgorithm;
use super::http::{HttpClient, HttpError, bounded_text, redact_userinfo};

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("fetching {url} failed: {source}")]
    Fetch {
        url: String,
        #[source]
        source: HttpError,
    },
    #[error(
        "{url} answered HTTP {status}{detail}; check fhirBaseUrl (discovery reads {{fhirBaseUrl}}/.well-known/smart-configuration), or the issuer when one is set"
    )]
    Status {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("{url} is not a JSON object: {reason}")]
    NotJson { url: String, reason: String },
    #[error(
        "the SMART configuration has no token_endpoint; set spec.tokenEndpoint (or --token-endpoint) to the server's token URL"
    )]
    NoTokenEndpoint,
    #[error("the SMART configuration's token_endpoint {value:?} is not an absolute URL: {reason}")]
    BadTokenEndpoint { value: String, reason: String },
    #[error("the token endpoint {url} is not usable: {source}")]
    TokenEndpointRefused {
        url: String,
        #[source]
        source: HttpError,
    },
    #[error(
        "the server supports none of RS384 and ES384 for client assertions (it offers {offered}); this client cannot authenticate to it"
    )]
    NoSupportedAlgorithm { offered: String },
    #[error(
        "the issuer {issuer} publishes no usable metadata: {rfc8414}; and {openid}; check the issuer URL (it is the server's issuer identifier, e.g. https://sso.example.org/realms/fhir)"
    )]
    NoIssuerMetadata {
        issuer: String,
        rfc8414: Box<DiscoveryError>,
        openid: Box<DiscoveryError>,
    },
    #[error(
        "{url} names the issuer {found:?}, not {expected}; metadata for another issuer is not trusted: check the issuer URL"
    )]
    IssuerMismatch {
        url: String,
        expected: String,
        found: String,
    },
}

impl DiscoveryError {
    /// The HTTP failure behind this error, if that is what it was.
    pub fn http_error(&self) -> Option<&HttpError> {
        match self {
            DiscoveryError::Fetch { source, .. }
            | DiscoveryError::TokenEndpointRefused { source, .. } => Some(source),
            DiscoveryError::NoIssuerMetadata { rfc8414, .. } => rfc8414.http_error(),
            _ => None,
        }
    }

    /// Whether trying again later could help.
    pub fn is_transient(&self) -> bool {
        match self {
            DiscoveryError::Fetch { source, .. } => source.is_transient(),
            DiscoveryError::Status { status, .. } => {
                *status >= 500 || *status == 429 || *status == 408
            }
            DiscoveryError::NoIssuerMetadata {
                rfc8414, openid, ..
            } => rfc8414.is_transient() || openid.is_transient(),
            _ => false,
        }
    }
}

/// Things a careful operator should know about the server's metadata that
/// do not stop a token request from working.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiscoveryWarning {
    NoAlgorithmList,
    MissingPrivateKeyJwt,
    MissingAsymmetricCapability,
    MissingClientCredentials,
    ScopeNotAdvertised(String),
    AlgorithmNotAdvertised(SigningAlgorithm),
}

impl fmt::Display for DiscoveryWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiscoveryWarning::NoAlgorithmList => f.write_str(
                "the server publishes no token_endpoint_auth_signing_alg_values_supported (SMART servers accept RS384, ES384 or both); a given key's own type decides, a generated key is RS384",
            ),
            DiscoveryWarning::MissingPrivateKeyJwt => f.write_str(
                "token_endpoint_auth_methods_supported does not list private_key_jwt",
            ),
            DiscoveryWarning::MissingAsymmetricCapability => {
                f.write_str("capabilities does not list client-confidential-asymmetric")
            }
            DiscoveryWarning::MissingClientCredentials => {
                f.write_str("grant_types_supported does not list client_credentials")
            }
            DiscoveryWarning::ScopeNotAdvertised(scope) => {
                write!(f, "scopes_supported does not list {scope}")
            }
            DiscoveryWarning::AlgorithmNotAdvertised(alg) => write!(
                f,
                "{alg} was chosen explicitly but the server does not list it in token_endpoint_auth_signing_alg_values_supported"
            ),
        }
    }
}

/// The parts of the SMART configuration this client uses. Absent or
/// malformed optional members are `None`, never an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmartConfiguration {
    pub token_endpoint: Url,
    pub issuer: Option<String>,
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    pub token_endpoint_auth_signing_alg_values_supported: Option<Vec<String>>,
    pub grant_types_supported: Option<Vec<String>>,
    pub scopes_supported: Option<Vec<String>>,
    pub capabilities: Option<Vec<String>>,
    /// The server's clock minus this host's when the document was fetched
    /// (its `Date` header), seconds.
    pub clock_skew: Option<i64>,
}

/// How the signing algorithm was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlgorithmSource {
    Explicit,
    ServerMetadata,
    /// The server lists no algorithms and the key in hand decides.
    KeyType,
    DefaultWithoutServerList,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlgorithmChoice {
    pub algorithm: SigningAlgorithm,
    pub source: AlgorithmSource,
}

/// `{base}/.well-known/smart-configuration`, keeping any path in the base
/// (`https://ehr.example/fhir/r4` and `.../r4/` give the same URL).
pub fn well_known_url(fhir_base_url: &Url) -> Url {
    let mut url = fhir_base_url.clone();
    url.set_query(None);
    url.set_fragment(None);
    let path = url.path().trim_end_matches('/').to_string();
    url.set_path(&format!("{path}/.well-known/smart-configuration"));
    url
}

/// Fetches and parses the SMART configuration.
pub async fn discover(
    client: &HttpClient,
    fhir_base_url: &Url,
) -> Result<SmartConfiguration, DiscoveryError> {
    fetch_metadata(client, &well_known_url(fhir_base_url)).await
}

/// Fetches and parses a metadata document (SMART, RFC 8414 or OpenID
/// Connect: the members this client reads have the same names in all
/// three), and checks the token endpoint it names.
pub async fn fetch_metadata(
    client: &HttpClient,
    url: &Url,
) -> Result<SmartConfiguration, DiscoveryError> {
    let shown = redact_userinfo(url);
    let sent_at = std::time::SystemTime::now();
    let response = client
        .get_at_most(url, MAX_METADATA_BYTES)
        .await
        .map_err(|source| DiscoveryError::Fetch {
            url: shown.clone(),
            source,
        })?;
    if response.status != 200 {
        let detail = match (&response.location, response.status) {
            (Some(location), 300..=399) => {
                format!(" redirecting to {}", bounded_text(location, 200))
            }
            _ => String::new(),
        };
        return Err(DiscoveryError::Status {
            url: shown,
            status: response.status,
            detail,
        });
    }
    let mut config = SmartConfiguration::parse(&response.body).map_err(|e| match e {
        DiscoveryError::NotJson { reason, .. } => DiscoveryError::NotJson { url: shown, reason },
        other => other,
    })?;
    config.clock_skew = response.clock_skew(sent_at, std::time::SystemTime::now());
    client.check_url(&config.token_endpoint).map_err(|source| {
        DiscoveryError::TokenEndpointRefused {
            url: redact_userinfo(&config.token_endpoint),
            source,
        }
    })?;
    Ok(config)
}

/// Real metadata documents are a few KiB (Epic's, Keycloak's, Okta's);
/// this leaves room for servers that list hundreds of scopes.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;
/// What is kept of a list in the metadata, and of each entry: a hostile
/// document of many tiny strings must not become a large heap.
pub const MAX_LIST_ITEMS: usize = 256;
pub const MAX_ITEM_CHARS: usize = 512;

fn string_list(doc: &serde_json::Map<String, Value>, key: &str) -> Option<Vec<String>> {
    let kept = |items: &mut dyn Iterator<Item = &str>| -> Vec<String> {
        items
            .filter(|s| s.len() <= MAX_ITEM_CHARS)
            .take(MAX_LIST_ITEMS)
            .map(str::to_string)
            .collect()
    };
    match doc.get(key)? {
        Value::Array(items) => Some(kept(&mut items.iter().filter_map(Value::as_str))),
        // Some servers publish a space-separated string instead of an array.
        Value::String(s) => Some(kept(&mut s.split_whitespace())),
        _ => None,
    }
}

impl SmartConfiguration {
    /// Parses a metadata document. Only a missing or unusable
    /// `token_endpoint` is fatal.
    pub fn parse(body: &[u8]) -> Result<Self, DiscoveryError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| DiscoveryError::NotJson {
            url: String::new(),
            reason: bounded_text(&e.to_string(), 200),
        })?;
        let Value::Object(doc) = value else {
            return Err(DiscoveryError::NotJson {
                url: String::new(),
                reason: "the document is not a JSON object".into(),
            });
        };
        let raw = match doc.get("token_endpoint") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            _ => return Err(DiscoveryError::NoTokenEndpoint),
        };
        let token_endpoint = parse_endpoint(&raw)?;
        Ok(Self {
            token_endpoint,
            issuer: doc
                .get("issuer")
                .and_then(Value::as_str)
                .filter(|s| s.len() <= 2048)
                .map(str::to_string),
            token_endpoint_auth_methods_supported: string_list(
                &doc,
                "token_endpoint_auth_methods_supported",
            ),
            token_endpoint_auth_signing_alg_values_supported: string_list(
                &doc,
                "token_endpoint_auth_signing_alg_values_supported",
            ),
            grant_types_supported: string_list(&doc, "grant_types_supported"),
            scopes_supported: string_list(&doc, "scopes_supported"),
            capabilities: string_list(&doc, "capabilities"),
            clock_skew: None,
        })
    }

    /// The explicit choice if there is one. Otherwise, with a key in hand
    /// (`key`: the algorithm its type can do), that key's algorithm when
    /// the server lists it or lists nothing (SMART servers accept RS384,
    /// ES384 or both, and the list is optional); else the first algorithm
    /// in the server's list, in its order, that this client supports; RS384
    /// for a key yet to be generated when the server lists none.
    pub fn choose_algorithm(
        &self,
        explicit: Option<SigningAlgorithm>,
        key: Option<SigningAlgorithm>,
    ) -> Result<AlgorithmChoice, DiscoveryError> {
        if let Some(algorithm) = explicit {
            return Ok(AlgorithmChoice {
                algorithm,
                source: AlgorithmSource::Explicit,
            });
        }
        let Some(offered) = &self.token_endpoint_auth_signing_alg_values_supported else {
            return Ok(match key {
                Some(algorithm) => AlgorithmChoice {
                    algorithm,
                    source: AlgorithmSource::KeyType,
                },
                None => AlgorithmChoice {
                    algorithm: SigningAlgorithm::RS384,
                    source: AlgorithmSource::DefaultWithoutServerList,
                },
            });
        };
        if let Some(algorithm) = key.filter(|k| offered.iter().any(|a| a == k.as_str())) {
            return Ok(AlgorithmChoice {
                algorithm,
                source: AlgorithmSource::ServerMetadata,
            });
        }
        offered
            .iter()
            .find_map(|name| name.parse::<SigningAlgorithm>().ok())
            .map(|algorithm| AlgorithmChoice {
                algorithm,
                source: AlgorithmSource::ServerMetadata,
            })
            .ok_or_else(|| DiscoveryError::NoSupportedAlgorithm {
                offered: if offered.is_empty() {
                    "an empty list".into()
                } else {
                    bounded_text(&offered.join(", "), 200)
                },
            })
    }

    /// What the metadata leaves unsaid or contradicts, for the caller to show.
    pub fn warnings(
        &self,
        scopes: &[String],
        choice: Option<AlgorithmChoice>,
    ) -> Vec<DiscoveryWarning> {
        let mut warnings = Vec::new();
        let lacks = |list: &Option<Vec<String>>, item: &str| {
            list.as_ref().is_some_and(|l| !l.iter().any(|x| x == item))
        };
        if let Some(choice) = choice {
            match choice.source {
                AlgorithmSource::DefaultWithoutServerList => {
                    warnings.push(DiscoveryWarning::NoAlgorithmList)
                }
                AlgorithmSource::Explicit
                    if lacks(
                        &self.token_endpoint_auth_signing_alg_values_supported,
                        choice.algorithm.as_str(),
                    ) =>
                {
                    warnings.push(DiscoveryWarning::AlgorithmNotAdvertised(choice.algorithm))
                }
                _ => {}
            }
        }
        if self.token_endpoint_auth_methods_supported.is_none()
            || lacks(
                &self.token_endpoint_auth_methods_supported,
                "private_key_jwt",
            )
        {
            warnings.push(DiscoveryWarning::MissingPrivateKeyJwt);
        }
        if self.capabilities.is_none()
            || lacks(&self.capabilities, "client-confidential-asymmetric")
        {
            warnings.push(DiscoveryWarning::MissingAsymmetricCapability);
        }
        if lacks(&self.grant_types_supported, "client_credentials") {
            warnings.push(DiscoveryWarning::MissingClientCredentials);
        }
        if let Some(supported) = &self.scopes_supported {
            for scope in scopes {
                if !scope_is_advertised(scope, supported) {
                    warnings.push(DiscoveryWarning::ScopeNotAdvertised(scope.clone()));
                }
            }
        }
        warnings
    }
}

/// Exact match, or a wildcard entry such as `system/*.read` or `system/*.*`
/// that covers a resource-specific scope.
fn scope_is_advertised(scope: &str, supported: &[String]) -> bool {
    supported.iter().any(|s| {
        if s == scope {
            return true;
        }
        let (Some((s_ctx, s_rest)), Some((ctx, rest))) = (s.split_once('/'), scope.split_once('/'))
        else {
            return false;
        };
        let (Some((s_res, s_perm)), Some((_, perm))) =
            (s_rest.split_once('.'), rest.split_once('.'))
        else {
            return false;
        };
        s_ctx == ctx && s_res == "*" && (s_perm == "*" || s_perm == perm)
    })
}

fn parse_endpoint(raw: &str) -> Result<Url, DiscoveryError> {
    let url = Url::parse(raw).map_err(|e| DiscoveryError::BadTokenEndpoint {
        value: bounded_text(raw, 200),
        reason: e.to_string(),
    })?;
    if url.cannot_be_a_base() || url.host_str().is_none() {
        return Err(DiscoveryError::BadTokenEndpoint {
            value: bounded_text(raw, 200),
            reason: "it has no host".into(),
        });
    }
    Ok(url)
}

#[cfg(test)]
mod tests;
