//! HTTPS for real: a private CA and server certificates made with the
//! openssl command, served by `openssl s_server`, fetched through the
//! protocol client. The trust store is the system's plus the CA bundle a
//! resource names; an unknown CA, a certificate for another host name and
//! an expired certificate are each refused.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use smart_backend_operator::smart::{self, DiscoveryError, HttpError, HttpPolicy, TlsProblem};
use url::Url;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and a server certificate signed by it for `san`, valid for
/// `days` (negative: already expired).
fn certificates(dir: &Path, san: &str, days: &str) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=test-ca",
            ],
        ]
        .concat(),
    );
    openssl(
        dir,
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "srv.key",
                "-out",
                "srv.csr",
                "-subj",
                "/CN=test-server",
            ],
        ]
        .concat(),
    );
    std::fs::write(dir.join("ext"), format!("subjectAltName={san}\n")).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            days,
            "-extfile",
            "ext",
        ],
    );
}

/// `openssl s_server -WWW` serving a SMART configuration from `dir`.
struct TlsServer {
    child: Child,
    port: u16,
}

impl TlsServer {
    async fn start(dir: &Path) -> Self {
        let wk = dir.join("fhir/.well-known");
        std::fs::create_dir_all(&wk).unwrap();
        std::fs::write(
            wk.join("smart-configuration"),
            r#"{"token_endpoint": "https://127.0.0.1/token", "token_endpoint_auth_signing_alg_values_supported": ["ES384"]}"#,
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("openssl")
            .args([
                "s_server",
                "-quiet",
                "-WWW",
                "-accept",
                &format!("127.0.0.1:{port}"),
            ])
            .args(["-cert", "srv.pem", "-key", "srv.key"])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start openssl s_server");
        for _ in 0..50 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self { child, port }
    }

    fn base(&self) -> Url {
        Url::parse(&format!("https://127.0.0.1:{}/fhir", self.port)).unwrap()
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn discover(
    server: &TlsServer,
    ca: Option<Vec<u8>>,
) -> Result<smart::SmartConfiguration, DiscoveryError> {
    let http = support::local_http_with(HttpPolicy {
        extra_roots_pem: ca,
        ..HttpPolicy::default()
    });
    smart::discovery::discover(&http, &server.base()).await
}

fn problem(error: &DiscoveryError) -> Option<TlsProblem> {
    match error.http_error()? {
        HttpError::Tls { problem, .. } => Some(*problem),
        _ => None,
    }
}

#[tokio::test]
async fn a_private_ca_bundle_is_trusted_and_nothing_else_is() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path(), "IP:127.0.0.1", "1");
    let server = TlsServer::start(dir.path()).await;
    let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let config = discover(&server, Some(ca))
        .await
        .expect("trusted through the CA bundle");
    assert_eq!(config.token_endpoint.as_str(), "https://127.0.0.1/token");

    let error = discover(&server, None).await.unwrap_err();
    assert_eq!(problem(&error), Some(TlsProblem::UnknownIssuer), "{error}");
}

/// Discovery from a server whose certificate (from a trusted private CA)
/// names `san` and is valid for `days`: the problem it is refused for.
async fn refused_for(san: &str, days: &str) -> Option<TlsProblem> {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path(), san, days);
    let server = TlsServer::start(dir.path()).await;
    let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let error = discover(&server, Some(ca)).await.unwrap_err();
    problem(&error)
}

#[tokio::test]
async fn a_certificate_for_another_host_is_refused() {
    assert_eq!(
        refused_for("DNS:ehr.example.org", "1").await,
        Some(TlsProblem::WrongName)
    );
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    assert_eq!(
        refused_for("IP:127.0.0.1", "-1").await,
        Some(TlsProblem::Expired)
    );
}

/// The operator end to end over HTTPS, with plain http refused (no
/// --insecure-allow-http): oidc-provider serves TLS with a certificate from
/// a private CA; a client naming that CA's bundle gets a token, one without
/// it is told to name one, and one reaching the server by a name the
/// certificate does not carry is told so.
#[tokio::test]
async fn the_operator_gets_a_token_over_https_through_a_private_ca_bundle() {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::PostParams;
    use serde_json::json;
    use support::oidc::{Client, OidcServer, Registration};
    use support::operator::{Harness, condition};

    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path(), "IP:127.0.0.1", "1");
    let h = Harness::with("tls", |s| {
        s.http.allow_http = false;
        s.http.destinations.allow_hosts.push("localhost".into());
    })
    .await;
    let registered = |id: &'static str| Client {
        id,
        scope: "system/Patient.rs",
        key: None,
        registration: Registration::JwksUriAt(h.jwks_uri(id)),
    };
    let server = OidcServer::start_tls(
        &[
            registered("trusted"),
            registered("untrusted"),
            registered("renamed"),
        ],
        &["system/Patient.rs"],
        &dir.path().join("srv.pem"),
        &dir.path().join("srv.key"),
    );
    assert!(server.fhir_base_url.starts_with("https://"));
    let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("private-ca".into()),
            ..Default::default()
        },
        data: Some([("ca.pem".to_string(), ByteString(ca))].into()),
        ..Default::default()
    };
    h.secrets()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let spec = |id: &str, base: &str, ca: bool| {
        let mut spec =
            json!({"fhirBaseUrl": base, "clientId": id, "scopes": ["system/Patient.rs"]});
        if ca {
            spec["tls"] = json!({"caBundleSecretRef": {"name": "private-ca", "key": "ca.pem"}});
        }
        spec
    };
    let by_name = server.fhir_base_url.replace("127.0.0.1", "localhost");
    h.apply("trusted", spec("trusted", &server.fhir_base_url, true))
        .await;
    h.apply("untrusted", spec("untrusted", &server.fhir_base_url, false))
        .await;
    h.apply("renamed", spec("renamed", &by_name, true)).await;

    let sbc = h.wait_ready("trusted").await;
    assert!(
        sbc.status
            .unwrap()
            .token_endpoint
            .unwrap()
            .starts_with("https://")
    );
    assert!(
        !h.wait_secret("trusted-token").await.data.unwrap()["access_token"]
            .0
            .is_empty()
    );

    let sbc = h
        .wait_condition("untrusted", "Discovered", "False", Some("TlsUntrusted"))
        .await;
    let message = &condition(&sbc, "Discovered").unwrap().message;
    assert!(message.contains("caBundleSecretRef"), "{message}");

    let sbc = h
        .wait_condition("renamed", "Discovered", "False", Some("TlsNameMismatch"))
        .await;
    let message = &condition(&sbc, "Discovered").unwrap().message;
    assert!(message.contains("other names"), "{message}");

    // The bundle is replaced by another CA's: the next request uses it (and
    // fails), then the right one again (and succeeds). The operator follows
    // the Secret through its watch.
    let other = tempfile::tempdir().unwrap();
    certificates(other.path(), "IP:127.0.0.1", "1");
    let set_bundle = |pem: Vec<u8>| {
        let secrets = h.secrets();
        async move {
            let patch = json!({"data": {"ca.pem": ByteString(pem)}});
            secrets
                .patch(
                    "private-ca",
                    &Default::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await
                .unwrap();
        }
    };
    set_bundle(std::fs::read(other.path().join("ca.pem")).unwrap()).await;
    h.annotate(
        "trusted",
        "smartbackend.dev/refresh-requested-at",
        "other-ca",
    )
    .await;
    h.wait_condition("trusted", "Discovered", "False", Some("TlsUntrusted"))
        .await;
    set_bundle(std::fs::read(dir.path().join("ca.pem")).unwrap()).await;
    h.annotate(
        "trusted",
        "smartbackend.dev/refresh-requested-at",
        "right-ca",
    )
    .await;
    // The bundle's own change may bring a successful look before the
    // request is seen: wait for the look that handled the request.
    let sbcs = h.sbcs();
    let sbc = support::cluster::wait_for(
        "the right CA's request handled, with discovery working",
        Duration::from_secs(60),
        || async { sbcs.get("trusted").await.ok() },
        |sbc| {
            let handled = sbc
                .status
                .as_ref()
                .and_then(|s| s.handled_refresh_request.as_deref());
            handled == Some("right-ca")
                && condition(sbc, "Discovered").is_some_and(|c| c.status == "True")
        },
    )
    .await;
    assert_eq!(
        sbc.status.unwrap().handled_refresh_request.as_deref(),
        Some("right-ca")
    );
}
