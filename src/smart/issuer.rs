//! Discovery for FHIR servers behind a general OAuth server (Keycloak, Okta,
//! Entra ID, Ping) that publishes RFC 8414 or OpenID Connect metadata and no
//! SMART configuration: the token endpoint and the signing algorithms come
//! from the issuer's metadata, read by the same lenient rules.

use url::Url;

use super::discovery::{self, DiscoveryError, SmartConfiguration, well_known_url};
use super::http::{HttpClient, redact_userinfo};

/// Where a client's authorization metadata is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataSource {
    /// `{fhirBaseUrl}/.well-known/smart-configuration`.
    Smart(Url),
    /// An OAuth issuer: RFC 8414 metadata, else OpenID Connect metadata.
    Issuer(Url),
}

impl MetadataSource {
    /// What is fetched first, as a cache key: two base URLs that differ
    /// only in their query string or a trailing slash are one entry.
    pub fn key(&self) -> String {
        match self {
            MetadataSource::Smart(base) => well_known_url(base).to_string(),
            MetadataSource::Issuer(issuer) => metadata_urls(issuer)[0].to_string(),
        }
    }

    /// The URL the source was named by (the FHIR base URL or the issuer).
    pub fn url(&self) -> &Url {
        match self {
            MetadataSource::Smart(url) | MetadataSource::Issuer(url) => url,
        }
    }

    /// In words, for condition messages.
    pub fn describe(&self) -> String {
        match self {
            MetadataSource::Smart(base) => {
                format!("the SMART configuration of {}", redact_userinfo(base))
            }
            MetadataSource::Issuer(issuer) => {
                format!("the metadata of issuer {}", redact_userinfo(issuer))
            }
        }
    }

    pub async fn fetch(&self, client: &HttpClient) -> Result<SmartConfiguration, DiscoveryError> {
        match self {
            MetadataSource::Smart(base) => discovery::discover(client, base).await,
            MetadataSource::Issuer(issuer) => discover_issuer(client, issuer).await,
        }
    }
}

/// The RFC 8414 metadata URL (the well-known segment goes between the host
/// and the issuer's path, §3.1), then the OpenID Connect one (appended to
/// the issuer, Discovery §4).
pub fn metadata_urls(issuer: &Url) -> [Url; 2] {
    let mut base = issuer.clone();
    base.set_query(None);
    base.set_fragment(None);
    let path = base.path().trim_end_matches('/').to_string();
    let mut rfc8414 = base.clone();
    rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    let mut openid = base;
    openid.set_path(&format!("{path}/.well-known/openid-configuration"));
    [rfc8414, openid]
}

/// Reads an issuer's metadata: RFC 8414 first; OpenID Connect when the
/// RFC 8414 document is missing or unusable (not when the server is
/// merely unavailable, which is retried as such). The document must name
/// the same issuer.
pub async fn discover_issuer(
    client: &HttpClient,
    issuer: &Url,
) -> Result<SmartConfiguration, DiscoveryError> {
    let [rfc8414, openid] = metadata_urls(issuer);
    let (config, url) = match discovery::fetch_metadata(client, &rfc8414).await {
        Ok(config) => (config, rfc8414),
        Err(error) if error.is_transient() => return Err(error),
        Err(first) => match discovery::fetch_metadata(client, &openid).await {
            Ok(config) => (config, openid),
            Err(second) => {
                return Err(DiscoveryError::NoIssuerMetadata {
                    issuer: redact_userinfo(issuer),
                    rfc8414: Box::new(first),
                    openid: Box::new(second),
                });
            }
        },
    };
    check_issuer(&config, issuer, &url)?;
    Ok(config)
}

/// RFC 8414 §3.3 and OpenID Connect Discovery §4.3: the `issuer` in the
/// document is the one asked for (a trailing slash aside).
fn check_issuer(
    config: &SmartConfiguration,
    issuer: &Url,
    url: &Url,
) -> Result<(), DiscoveryError> {
    let expected = issuer.as_str().trim_end_matches('/');
    match config.issuer.as_deref() {
        Some(found) if found.trim_end_matches('/') != expected => {
            Err(DiscoveryError::IssuerMismatch {
                url: redact_userinfo(url),
                expected: redact_userinfo(issuer),
                found: super::http::bounded_text(found, 200),
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(issuer: &str) -> [String; 2] {
        metadata_urls(&Url::parse(issuer).unwrap()).map(|u| u.to_string())
    }

    #[test]
    fn rfc8414_inserts_the_well_known_segment_and_openid_appends_it() {
        assert_eq!(
            urls("https://sso.example.org/realms/fhir"),
            [
                "https://sso.example.org/.well-known/oauth-authorization-server/realms/fhir",
                "https://sso.example.org/realms/fhir/.well-known/openid-configuration",
            ]
        );
        assert_eq!(
            urls("https://sso.example.org/realms/fhir/"),
            urls("https://sso.example.org/realms/fhir")
        );
        assert_eq!(
            urls("https://login.example.org"),
            [
                "https://login.example.org/.well-known/oauth-authorization-server",
                "https://login.example.org/.well-known/openid-configuration",
            ]
        );
    }

    #[test]
    fn the_cache_key_is_what_is_fetched() {
        let with_query = MetadataSource::Smart(Url::parse("https://ehr.example/fhir?x=1").unwrap());
        let plain = MetadataSource::Smart(Url::parse("https://ehr.example/fhir/").unwrap());
        assert_eq!(with_query.key(), plain.key());
        assert_eq!(
            plain.key(),
            "https://ehr.example/fhir/.well-known/smart-configuration"
        );
    }

    #[test]
    fn metadata_for_another_issuer_is_refused() {
        let doc = br#"{"issuer": "https://evil.example/", "token_endpoint": "https://sso.example.org/token"}"#;
        let config = SmartConfiguration::parse(doc).unwrap();
        let issuer = Url::parse("https://sso.example.org/realms/fhir").unwrap();
        let error = check_issuer(&config, &issuer, &issuer).unwrap_err();
        assert!(
            matches!(error, DiscoveryError::IssuerMismatch { .. }),
            "{error}"
        );
        let same = br#"{"issuer": "https://sso.example.org/realms/fhir/", "token_endpoint": "https://sso.example.org/t"}"#;
        let config = SmartConfiguration::parse(same).unwrap();
        assert!(check_issuer(&config, &issuer, &issuer).is_ok());
    }
}
