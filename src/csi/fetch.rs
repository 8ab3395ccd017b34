//! Asking the leader for a pod's token: where it listens and the
//! certificate to trust come from the leader Lease; the pod's
//! ServiceAccount token is the credential.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use tokio::sync::Mutex;

use super::volume::VolumeRequest;
use crate::token_delivery::publish::{Announced, announced};
use crate::token_delivery::wire::{DeliveredToken, Refusal, token_path};

/// The largest answer read from the leader.
const MAX_ANSWER: usize = 64 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum Fetched {
    Token(DeliveredToken),
    /// The leader says no, and will go on saying it (wrong namespace or
    /// service account, a credential it does not accept).
    Refused(String),
    /// Not now: no leader, no token yet, the network.
    Unavailable(String),
}

/// The leader as the Lease announces it.
pub struct Leader {
    leases: Api<Lease>,
    lease: String,
    timeout: Duration,
    current: Mutex<Option<(Announced, reqwest::Client)>>,
}

impl Leader {
    pub fn new(client: kube::Client, namespace: &str, lease: &str, timeout: Duration) -> Self {
        Leader {
            leases: Api::namespaced(client, namespace),
            lease: lease.to_string(),
            timeout,
            current: Mutex::new(None),
        }
    }

    /// The connection to the leader: the one in use, or (when `fresh`, or
    /// none yet) the one the Lease announces now.
    async fn connection(&self, fresh: bool) -> Result<(String, reqwest::Client), String> {
        let mut current = self.current.lock().await;
        if !fresh && let Some((announced, http)) = current.as_ref() {
            return Ok((announced.url.clone(), http.clone()));
        }
        let lease = self
            .leases
            .get_opt(&self.lease)
            .await
            .map_err(|e| format!("reading the leader Lease {} failed: {e}", self.lease))?
            .ok_or_else(|| {
                format!(
                    "no Lease {} in the operator's namespace: is the operator installed, with CSI delivery on?",
                    self.lease
                )
            })?;
        let found = announced(&lease)?;
        if let Some((known, http)) = current.as_ref()
            && *known == found
        {
            return Ok((known.url.clone(), http.clone()));
        }
        let certificate = reqwest::Certificate::from_pem(found.certificate_pem.as_bytes())
            .map_err(|e| format!("the certificate on the leader Lease is not usable: {e}"))?;
        let http = reqwest::Client::builder()
            .tls_certs_only(vec![certificate])
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| format!("building the HTTPS client for the leader: {e}"))?;
        let url = found.url.clone();
        *current = Some((found, http.clone()));
        Ok((url, http))
    }

    /// The pod's token, from the leader; once more with the Lease read
    /// again if the leader cannot be reached or does not lead any more
    /// (not when it leads and has no token yet: the Lease would say the
    /// same, for one more API request per ask).
    pub async fn fetch(&self, request: &VolumeRequest) -> Fetched {
        match self.fetch_once(request, false).await {
            (_, Stale::Yes) => self.fetch_once(request, true).await.0,
            (done, Stale::No) => done,
        }
    }

    async fn fetch_once(&self, request: &VolumeRequest, fresh: bool) -> (Fetched, Stale) {
        let (url, http) = match self.connection(fresh).await {
            Ok(found) => found,
            Err(why) => return (Fetched::Unavailable(why), Stale::No),
        };
        let answer = http
            .get(format!(
                "{url}{}",
                token_path(&request.namespace, &request.client)
            ))
            .bearer_auth(request.credential.expose())
            .send()
            .await;
        let response = match answer {
            Ok(response) => response,
            Err(e) => {
                let why = format!(
                    "the operator's leader at {url} could not be reached: {:#}",
                    anyhow::Error::from(e)
                );
                return (Fetched::Unavailable(why), Stale::Yes);
            }
        };
        let status = response.status();
        let body = match response.bytes().await {
            Ok(body) if body.len() <= MAX_ANSWER => body,
            Ok(_) => {
                let why = "the leader's answer was too large".into();
                return (Fetched::Unavailable(why), Stale::No);
            }
            Err(e) => {
                let why = format!("reading the leader's answer failed: {e}");
                return (Fetched::Unavailable(why), Stale::Yes);
            }
        };
        let stale = match status {
            reqwest::StatusCode::MISDIRECTED_REQUEST => Stale::Yes,
            _ => Stale::No,
        };
        (interpret(status.as_u16(), &body), stale)
    }
}

/// Whether the leader the plugin knows may have changed.
enum Stale {
    Yes,
    No,
}

/// The leader's answer (pure).
pub fn interpret(status: u16, body: &[u8]) -> Fetched {
    let message = || {
        serde_json::from_slice::<Refusal>(body)
            .map(|r| r.message)
            .unwrap_or_else(|_| format!("the leader answered HTTP {status}"))
    };
    match status {
        200 => serde_json::from_slice(body).map_or_else(
            |_| Fetched::Unavailable("the leader's answer was not a token".into()),
            Fetched::Token,
        ),
        401 | 403 => Fetched::Refused(message()),
        _ => Fetched::Unavailable(message()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answers() {
        let token = DeliveredToken::new(
            "t",
            std::time::SystemTime::now(),
            None,
            "https://f",
            std::time::SystemTime::now(),
        );
        let body = serde_json::to_vec(&token).unwrap();
        assert_eq!(interpret(200, &body), Fetched::Token(token));
        assert_eq!(
            interpret(403, br#"{"message":"not yours"}"#),
            Fetched::Refused("not yours".into())
        );
        assert_eq!(
            interpret(503, b"<html>"),
            Fetched::Unavailable("the leader answered HTTP 503".into())
        );
        assert!(matches!(interpret(200, b"{}"), Fetched::Unavailable(_)));
    }
}
