//! Trust anchors for TLS: the system's roots, read from disk at most once
//! per process and only when an https request is first made (reading and
//! parsing the store was most of a one-shot `token` command's time), plus a
//! resource's private CA bundle when it names one.

use std::sync::OnceLock;

/// The system roots, as reqwest certificates, loaded on first use.
fn system_roots() -> &'static [reqwest::Certificate] {
    static ROOTS: OnceLock<Vec<reqwest::Certificate>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        for error in &loaded.errors {
            tracing::warn!(%error, "a system trust store entry could not be read");
        }
        loaded
            .certs
            .iter()
            .filter_map(|der| reqwest::Certificate::from_der(der).ok())
            .collect()
    })
}

/// The certificates of a PEM bundle; an error when it holds none.
pub fn parse_bundle(pem: &[u8]) -> Result<Vec<reqwest::Certificate>, String> {
    let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("it holds no PEM certificate".into());
    }
    Ok(certs)
}

/// Trusts the system roots and `extra`, and nothing else.
pub fn with_roots(
    builder: reqwest::ClientBuilder,
    extra: &[reqwest::Certificate],
) -> reqwest::ClientBuilder {
    let roots = system_roots().iter().chain(extra).cloned();
    builder.tls_certs_only(roots)
}

/// Trusts nothing: for a client that only ever makes plain-http requests,
/// so that building it reads no trust store.
pub fn without_roots(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    builder.tls_certs_only(Vec::new())
}
