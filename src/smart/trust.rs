//! Trust anchors for TLS: the system's roots, read from disk at most once
//! per process and only when an https request is first made, plus a
//! resource's private CA bundle when it names one; and, when a server's
//! certificate is refused, which of the problems with their own fix it was.

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

/// Why a server's certificate was refused, when that is why a connection
/// failed: each has its own fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsProblem {
    /// Signed by a CA this client does not trust (a private CA).
    UnknownIssuer,
    /// Issued for other names than the URL's host.
    WrongName,
    /// Expired, or not valid yet (which may also be this host's clock).
    Expired,
    /// Anything else about the certificate.
    Other,
}

/// The certificate error behind a failed connection, if that is what it
/// was: rustls reports it inside the I/O error the connector returns.
pub fn certificate_problem(error: &(dyn std::error::Error + 'static)) -> Option<TlsProblem> {
    use rustls::{CertificateError, Error};
    let classify = |e: &Error| match e {
        Error::InvalidCertificate(c) => Some(match c {
            CertificateError::UnknownIssuer => TlsProblem::UnknownIssuer,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsProblem::WrongName
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => TlsProblem::Expired,
            _ => TlsProblem::Other,
        }),
        _ => None,
    };
    // An io::Error's source() skips the error it wraps (and the connector
    // wraps rustls's error in two of them), so step into each one.
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<Error>().and_then(classify) {
            return Some(found);
        }
        current = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}
