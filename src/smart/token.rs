//! The token request (client_credentials with a JWT client assertion) and
//! the classification of everything a token endpoint can answer.

use std::time::{Duration, SystemTime};

use serde_json::Value;
use url::Url;

use super::SecretString;
use super::assertion::ClientAssertion;
use super::http::{HttpClient, HttpError, HttpResponse, bounded_text, redact_userinfo};

pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Used when a server omits `expires_in`: SMART recommends five-minute
/// tokens, so assuming longer would risk serving an expired one.
pub const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(300);
/// Lifetimes beyond a year are treated as a broken response.
/// The longest granted `scope` kept (in the status and the token Secret):
/// what the most a resource may ask for (64 scopes of 256 bytes) can grow
/// to with a server's additions.
pub const MAX_GRANTED_SCOPE: usize = 20 * 1024;
pub const MAX_EXPIRES_IN: Duration = Duration::from_secs(366 * 24 * 3600);
/// How much of a server's error text is ever repeated.
pub const MAX_ERROR_TEXT: usize = 300;

/// Whether an error can pass by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Bad configuration or registration: retrying the same request fails
    /// the same way until someone changes something.
    Permanent,
    /// Outage, overload or a bad answer: retry with backoff, honouring the
    /// server's `Retry-After` when it gave one.
    Transient { retry_after: Option<Duration> },
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token endpoint answered {code}{}{}", describe(.description), error_uri_text(.uri))]
    OAuth {
        status: u16,
        code: String,
        description: Option<String>,
        uri: Option<String>,
    },
    #[error("the token endpoint is rate limiting (HTTP 429){}", retry_after_text(.retry_after))]
    RateLimited { retry_after: Option<Duration> },
    #[error("the token endpoint answered HTTP {status}{detail}")]
    UnexpectedStatus {
        status: u16,
        detail: String,
        retry_after: Option<Duration>,
    },
    #[error("the token endpoint's answer is unusable: {0}")]
    InvalidResponse(String),
    #[error("the token request failed: {0}")]
    Transport(#[source] HttpError),
}

fn describe(description: &Option<String>) -> String {
    description
        .as_ref()
        .map(|d| format!(": {d}"))
        .unwrap_or_default()
}

fn error_uri_text(uri: &Option<String>) -> String {
    uri.as_ref()
        .map(|u| format!(" (see {u})"))
        .unwrap_or_default()
}

fn retry_after_text(retry_after: &Option<Duration>) -> String {
    retry_after
        .map(|d| format!("; it asks to wait {}s", d.as_secs()))
        .unwrap_or_default()
}

impl TokenError {
    pub fn class(&self) -> ErrorClass {
        match self {
            TokenError::OAuth { status, code, .. } => match code.as_str() {
                "temporarily_unavailable" | "server_error" | "slow_down" => {
                    ErrorClass::Transient { retry_after: None }
                }
                _ if *status >= 500 => ErrorClass::Transient { retry_after: None },
                _ => ErrorClass::Permanent,
            },
            TokenError::RateLimited { retry_after } => ErrorClass::Transient {
                retry_after: *retry_after,
            },
            TokenError::UnexpectedStatus {
                status,
                retry_after,
                ..
            } => {
                if *status >= 500 || *status == 408 {
                    ErrorClass::Transient {
                        retry_after: *retry_after,
                    }
                } else {
                    ErrorClass::Permanent
                }
            }
            // A server that answers 200 with garbage is misbehaving; it may
            // recover, and a bounded backoff costs little.
            TokenError::InvalidResponse(_) => ErrorClass::Transient { retry_after: None },
            TokenError::Transport(e) if e.is_transient() => {
                ErrorClass::Transient { retry_after: None }
            }
            TokenError::Transport(_) => ErrorClass::Permanent,
        }
    }

    /// A short, bounded label for metrics and condition reasons.
    pub fn category(&self) -> &'static str {
        match self {
            TokenError::OAuth { code, .. } => match code.as_str() {
                "invalid_client" => "invalid_client",
                "invalid_scope" => "invalid_scope",
                "invalid_grant" => "invalid_grant",
                "unauthorized_client" => "unauthorized_client",
                "invalid_request" => "invalid_request",
                "unsupported_grant_type" => "unsupported_grant_type",
                "temporarily_unavailable" => "temporarily_unavailable",
                "server_error" => "server_error",
                _ => "oauth_other",
            },
            TokenError::RateLimited { .. } => "rate_limited",
            TokenError::UnexpectedStatus { status, .. } if *status >= 500 => "server_unavailable",
            TokenError::UnexpectedStatus { .. } => "unexpected_status",
            TokenError::InvalidResponse(_) => "invalid_response",
            TokenError::Transport(HttpError::Timeout { .. }) => "timeout",
            TokenError::Transport(HttpError::Connect { .. }) => "connect",
            TokenError::Transport(_) => "transport",
        }
    }

    /// How long the server asked to wait, for a transient error.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.class() {
            ErrorClass::Transient { retry_after } => retry_after,
            ErrorClass::Permanent => None,
        }
    }

    /// The RFC 6749 error code, when the server gave one.
    pub fn oauth_code(&self) -> Option<&str> {
        match self {
            TokenError::OAuth { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// One token request.
#[derive(Debug)]
pub struct TokenRequest<'a> {
    pub token_endpoint: &'a Url,
    /// Space-separated, passed through unchanged (SMART v1 and v2 syntax).
    pub scope: &'a str,
    pub assertion: &'a ClientAssertion,
    /// Extra form parameters some servers want (e.g. `resource`).
    pub extra_params: &'a [(String, String)],
}

/// An access token and what the server said about it.
#[derive(Clone, Debug)]
pub struct AccessToken {
    pub access_token: SecretString,
    pub token_type: String,
    /// The lifetime the server granted (or [`DEFAULT_EXPIRES_IN`]).
    pub expires_in: Duration,
    /// True when the server omitted `expires_in`.
    pub expires_in_defaulted: bool,
    /// Measured from when the request was sent, so that time on the wire
    /// shortens, never lengthens, the token's believed life.
    pub expires_at: SystemTime,
    /// The granted scope, when the server stated it.
    pub scope: Option<String>,
}

/// Sends the token request.
pub async fn request_token(
    client: &HttpClient,
    request: &TokenRequest<'_>,
) -> Result<AccessToken, TokenError> {
    exchange(client, request).await.result
}

/// A token request's outcome, and what the answer said about the server's
/// clock.
pub struct Exchange {
    pub result: Result<AccessToken, TokenError>,
    /// The server's clock minus this host's, seconds, when it sent `Date`.
    pub clock_skew: Option<i64>,
}

/// Sends the token request and notes the server's clock.
pub async fn exchange(client: &HttpClient, request: &TokenRequest<'_>) -> Exchange {
    let sent_at = SystemTime::now();
    let (result, clock_skew) = match send(client, request).await {
        Ok(response) => {
            let received_at = SystemTime::now();
            let skew = response.clock_skew(sent_at, received_at);
            (parse_token_response(&response, sent_at, received_at), skew)
        }
        Err(error) => (Err(error), None),
    };
    Exchange { result, clock_skew }
}

async fn send(client: &HttpClient, request: &TokenRequest<'_>) -> Result<HttpResponse, TokenError> {
    let mut form: Vec<(&str, &str)> = vec![
        ("grant_type", "client_credentials"),
        ("scope", request.scope),
        ("client_assertion_type", CLIENT_ASSERTION_TYPE),
        ("client_assertion", request.assertion.jwt.expose()),
    ];
    for (name, value) in request.extra_params {
        form.push((name.as_str(), value.as_str()));
    }
    client
        .post_form(request.token_endpoint, &form)
        .await
        .map_err(TokenError::Transport)
}

/// Turns a token endpoint's answer into a token or a classified error.
pub fn parse_token_response(
    response: &HttpResponse,
    sent_at: SystemTime,
    now: SystemTime,
) -> Result<AccessToken, TokenError> {
    let json: Option<serde_json::Map<String, Value>> = match serde_json::from_slice(&response.body)
    {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    };
    let retry_after = response
        .retry_after
        .as_deref()
        .and_then(|v| parse_retry_after(v, now));
    if response.status != 200 {
        if response.status == 429 {
            return Err(TokenError::RateLimited { retry_after });
        }
        if let Some(code) = json
            .as_ref()
            .and_then(|j| j.get("error"))
            .and_then(Value::as_str)
        {
            let text = |key: &str| {
                json.as_ref()
                    .and_then(|j| j.get(key))
                    .and_then(Value::as_str)
                    .map(|s| bounded_text(s, MAX_ERROR_TEXT))
            };
            return Err(TokenError::OAuth {
                status: response.status,
                code: bounded_text(code, 64),
                description: text("error_description"),
                uri: text("error_uri"),
            });
        }
        let detail = match (response.status, &response.location) {
            (300..=399, Some(location)) => format!(
                " redirecting to {}; configure the final URL (redirects are not followed)",
                bounded_text(location, 200)
            ),
            _ if looks_like_html(response) => {
                " with an HTML page instead of an OAuth error".to_string()
            }
            _ => String::new(),
        };
        return Err(TokenError::UnexpectedStatus {
            status: response.status,
            detail,
            retry_after,
        });
    }
    let Some(json) = json else {
        let what = if looks_like_html(response) {
            "an HTML page"
        } else {
            "not a JSON object"
        };
        return Err(TokenError::InvalidResponse(format!(
            "the 200 response is {what}"
        )));
    };
    let access_token = match json.get("access_token") {
        Some(Value::String(t)) if !t.is_empty() => SecretString::new(t.clone()),
        _ => {
            return Err(TokenError::InvalidResponse(
                "the response has no access_token".into(),
            ));
        }
    };
    let token_type = json
        .get("token_type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !token_type.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::InvalidResponse(format!(
            "token_type is {:?}, not bearer",
            bounded_text(token_type, 40)
        )));
    }
    let (expires_in, expires_in_defaulted) = match json.get("expires_in") {
        None | Some(Value::Null) => (DEFAULT_EXPIRES_IN, true),
        Some(value) => (parse_expires_in(value)?, false),
    };
    let scope = json.get("scope").and_then(Value::as_str);
    if let Some(scope) = scope
        && scope.len() > MAX_GRANTED_SCOPE
    {
        return Err(TokenError::InvalidResponse(format!(
            "the granted scope is {} bytes, more than the {MAX_GRANTED_SCOPE} the operator keeps (a resource asks for at most 64 scopes of 256 bytes)",
            scope.len()
        )));
    }
    Ok(AccessToken {
        access_token,
        token_type: "Bearer".to_string(),
        expires_in,
        expires_in_defaulted,
        expires_at: crate::checked_time::after(sent_at, expires_in),
        scope: scope.map(str::to_string),
    })
}

fn parse_expires_in(value: &Value) -> Result<Duration, TokenError> {
    // Some servers send the number as a string.
    let seconds = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match seconds {
        Some(s) if s >= 1.0 && s <= MAX_EXPIRES_IN.as_secs_f64() => {
            Ok(Duration::from_secs(s as u64))
        }
        Some(_) => Err(TokenError::InvalidResponse(format!(
            "expires_in {} is outside 1 s to 366 days",
            bounded_text(&value.to_string(), 40)
        ))),
        None => Err(TokenError::InvalidResponse(
            "expires_in is not a number".into(),
        )),
    }
}

fn looks_like_html(response: &HttpResponse) -> bool {
    response
        .content_type
        .as_deref()
        .is_some_and(|c| c.contains("html"))
        || response.body.trim_ascii_start().starts_with(b"<")
}

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The error as a person should read it, with the next step to take.
pub fn advice(error: &TokenError, client_id: &str, kid: &str, endpoint: &Url) -> String {
    let endpoint = redact_userinfo(endpoint);
    match error.oauth_code() {
        Some("invalid_client") => format!(
            "{error}: check that client {client_id} is registered at {endpoint} with the public key kid {kid} (or its JWKS URL)"
        ),
        Some("invalid_scope") => {
            format!("{error}: request only scopes granted to client {client_id}")
        }
        Some("unauthorized_client") => {
            format!(
                "{error}: enable the client_credentials grant for client {client_id} at the authorization server"
            )
        }
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests;
