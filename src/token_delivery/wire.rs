//! What the leader sends a node plugin: one client's current token, and
//! the files a pod sees (the same names as the token Secret's keys).

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::controller::decide::secret_data::{parse_rfc3339, rfc3339};

/// The path of one client's token on the leader's listener.
pub fn token_path(namespace: &str, client: &str) -> String {
    format!("/v1/namespaces/{namespace}/clients/{client}/token")
}

/// The answer to a node plugin: the token and when to ask again.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveredToken {
    pub access_token: String,
    pub token_type: String,
    /// RFC 3339.
    pub expires_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    pub fhir_base_url: String,
    /// RFC 3339: when the leader plans the next token; a plugin asks again
    /// soon after.
    pub refresh_at: String,
}

impl fmt::Debug for DeliveredToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveredToken")
            .field("expires_at", &self.expires_at)
            .field("refresh_at", &self.refresh_at)
            .finish_non_exhaustive()
    }
}

impl DeliveredToken {
    pub fn new(
        access_token: &str,
        expires_at: SystemTime,
        scope: Option<&str>,
        fhir_base_url: &str,
        refresh_at: SystemTime,
    ) -> Self {
        DeliveredToken {
            access_token: access_token.to_string(),
            token_type: "Bearer".into(),
            expires_at: rfc3339(expires_at),
            scope: scope.map(str::to_string),
            fhir_base_url: fhir_base_url.to_string(),
            refresh_at: rfc3339(refresh_at),
        }
    }

    pub fn expires(&self) -> Option<SystemTime> {
        parse_rfc3339(&self.expires_at)
    }

    pub fn refresh(&self) -> Option<SystemTime> {
        parse_rfc3339(&self.refresh_at)
    }

    /// The files of the pod's volume, by name.
    pub fn files(&self) -> Vec<(&'static str, String)> {
        token_files(
            &self.access_token,
            &self.expires_at,
            &self.fhir_base_url,
            self.scope.as_deref(),
        )
    }
}

/// The token's keys, for the Secret and the CSI volume alike: the token,
/// the Authorization header value, its type and expiry, the FHIR base URL,
/// and the granted scopes when the server stated them.
pub fn token_files(
    access_token: &str,
    expires_at: &str,
    fhir_base_url: &str,
    scope: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut files = vec![
        ("access_token", access_token.to_string()),
        ("authorization", format!("Bearer {access_token}")),
        ("token_type", "Bearer".to_string()),
        ("expires_at", expires_at.to_string()),
        ("fhir_base_url", fhir_base_url.to_string()),
    ];
    if let Some(scope) = scope {
        files.push(("scope", scope.to_string()));
    }
    files
}

/// An error the leader answers with: what happened and what to do.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Refusal {
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_files_match_the_secret_keys_and_debug_hides_the_token() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let token = DeliveredToken::new("tok", at, Some("system/Patient.rs"), "https://f/r4", at);
        let files = token.files();
        let names: Vec<_> = files.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "access_token",
                "authorization",
                "token_type",
                "expires_at",
                "fhir_base_url",
                "scope"
            ]
        );
        assert_eq!(files[1].1, "Bearer tok");
        assert_eq!(token.expires(), Some(at));
        assert!(!format!("{token:?}").contains("tok\""));
        let json = serde_json::to_string(&token).unwrap();
        assert_eq!(
            serde_json::from_str::<DeliveredToken>(&json).unwrap(),
            token
        );
        assert_eq!(token_path("a", "b"), "/v1/namespaces/a/clients/b/token");
    }
}
