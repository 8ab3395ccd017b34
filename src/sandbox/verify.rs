//! Verification of a client assertion, as a strict EHR does it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use url::Url;

use super::{Sandbox, SandboxClient};

pub struct Verified {
    pub client: SandboxClient,
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    iat: Option<u64>,
    exp: u64,
    jti: String,
}

pub async fn assertion(sandbox: &Sandbox, jwt: &str) -> Result<Verified, String> {
    let header =
        jsonwebtoken::decode_header(jwt).map_err(|e| format!("the assertion is not a JWT: {e}"))?;
    if !matches!(header.alg, Algorithm::RS384 | Algorithm::ES384) {
        return Err(format!(
            "alg {:?} is not accepted; use RS384 or ES384",
            header.alg
        ));
    }
    if header.typ.as_deref() != Some("JWT") {
        return Err("typ must be JWT".into());
    }
    let kid = header
        .kid
        .clone()
        .ok_or("the assertion header has no kid")?;
    // The issuer names the client; read it before verifying to find the keys.
    let unverified = jsonwebtoken::dangerous::insecure_decode::<Claims>(jwt)
        .map_err(|e| format!("unreadable claims: {e}"))?;
    let client = sandbox
        .config
        .clients
        .iter()
        .find(|c| c.client_id == unverified.claims.iss)
        .cloned()
        .ok_or_else(|| format!("unknown client {:?}", unverified.claims.iss))?;
    let jwks = client_jwks(sandbox, &client, &kid).await?;
    let jwk = jwks
        .find(&kid)
        .ok_or_else(|| format!("no key with kid {kid} is registered for this client"))?;
    let key = DecodingKey::from_jwk(jwk)
        .map_err(|e| format!("the registered key {kid} is unusable: {e}"))?;
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[sandbox.token_endpoint()]);
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    validation.leeway = 5;
    let claims = jsonwebtoken::decode::<Claims>(jwt, &key, &validation)
        .map_err(|e| format!("the assertion does not verify: {e}"))?
        .claims;
    if claims.sub != claims.iss {
        return Err("sub must equal iss".into());
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    if claims.exp > now + 300
        || claims
            .iat
            .is_some_and(|iat| claims.exp.saturating_sub(iat) > 300)
    {
        return Err("the assertion must expire within five minutes".into());
    }
    let mut seen = sandbox.seen_jti.lock().unwrap_or_else(|e| e.into_inner());
    let now_time = SystemTime::now();
    seen.retain(|_, until| *until > now_time);
    let replay_key = format!("{}/{}", claims.iss, claims.jti);
    if seen.contains_key(&replay_key) {
        return Err("this jti was used before".into());
    }
    seen.insert(
        replay_key,
        crate::checked_time::after(
            UNIX_EPOCH,
            Duration::from_secs(claims.exp.saturating_add(10)),
        ),
    );
    Ok(Verified { client })
}

/// How long a JWK Set fetched from a jwks_uri is reused. A kid it does not
/// hold triggers a fetch at once, as EHRs do, so a new key works at its
/// first use.
const JWKS_CACHE_TTL: Duration = Duration::from_secs(60);

async fn client_jwks(
    sandbox: &Sandbox,
    client: &SandboxClient,
    kid: &str,
) -> Result<JwkSet, String> {
    if let Some(inline) = &client.jwks {
        return serde_json::from_value(inline.clone())
            .map_err(|e| format!("the registered JWKS is invalid: {e}"));
    }
    let uri = client
        .jwks_uri
        .as_deref()
        .ok_or("the client has neither jwks nor jwks_uri")?;
    let cached = sandbox
        .jwks_cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(uri)
        .filter(|(fetched, jwks)| match sandbox.caching {
            super::JwksCaching::Lenient => {
                fetched.elapsed() < JWKS_CACHE_TTL && jwks.find(kid).is_some()
            }
            super::JwksCaching::Strict(ttl) => fetched.elapsed() < ttl,
        })
        .map(|(_, jwks)| jwks.clone());
    if let Some(jwks) = cached {
        return Ok(jwks);
    }
    let url = Url::parse(uri).map_err(|e| format!("jwks_uri is not a URL: {e}"))?;
    let response = sandbox
        .http
        .get(&url)
        .await
        .map_err(|e| format!("fetching jwks_uri failed: {e}"))?;
    if response.status != 200 {
        return Err(format!("jwks_uri answered HTTP {}", response.status));
    }
    let jwks: JwkSet = serde_json::from_slice(&response.body)
        .map_err(|e| format!("jwks_uri did not return a JWK Set: {e}"))?;
    sandbox
        .jwks_cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(uri.to_string(), (Instant::now(), jwks.clone()));
    Ok(jwks)
}
