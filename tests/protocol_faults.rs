//! What the protocol client does when servers misbehave, against the
//! in-process fault server: error statuses, rate limits, slow, huge, HTML
//! and redirecting answers, broken metadata.

mod support;

use std::time::Duration;

use serde_json::json;
use smart_backend_operator::smart::{
    self, AssertionParams, DiscoveryError, ErrorClass, HttpClient, HttpError, HttpPolicy,
    SigningAlgorithm, TokenError, TokenRequest,
};
use support::fault_server::{Behaviour, FaultServer};
use url::Url;

fn http(timeout: Duration) -> HttpClient {
    support::local_http_with(HttpPolicy {
        request_timeout: timeout,
        connect_timeout: Duration::from_secs(1),
        ..HttpPolicy::default()
    })
}

async fn discover(
    server: &FaultServer,
    base: &str,
) -> Result<smart::SmartConfiguration, DiscoveryError> {
    smart::discovery::discover(
        &http(Duration::from_secs(5)),
        &Url::parse(&server.url(base)).unwrap(),
    )
    .await
}

async fn token(server: &FaultServer, timeout: Duration) -> Result<smart::AccessToken, TokenError> {
    token_with(server, timeout, &[]).await
}

async fn token_with(
    server: &FaultServer,
    timeout: Duration,
    extra: &[(String, String)],
) -> Result<smart::AccessToken, TokenError> {
    let key = support::signing_key(SigningAlgorithm::ES384);
    let endpoint = Url::parse(&server.url("/token")).unwrap();
    let audience = endpoint.to_string();
    let assertion =
        smart::assertion::sign(&key, &AssertionParams::new("client-1", &audience)).unwrap();
    let request = TokenRequest {
        token_endpoint: &endpoint,
        scope: "system/Patient.rs",
        assertion: &assertion,
        extra_params: extra,
    };
    smart::token::request_token(&http(timeout), &request).await
}

#[tokio::test]
async fn metadata_is_found_under_a_base_url_with_a_path() {
    let server = FaultServer::start().await;
    server.serve_metadata("/fhir/r4");
    for base in ["/fhir/r4", "/fhir/r4/"] {
        let config = discover(&server, base).await.unwrap();
        assert_eq!(config.token_endpoint.as_str(), server.url("/token"));
    }
}

#[tokio::test]
async fn discovery_failures_are_classified_and_explained() {
    let server = FaultServer::start().await;
    server.on("/a/.well-known/smart-configuration", Behaviour::html(503));
    let err = discover(&server, "/a").await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(
        !err.to_string().contains("internal-host-42"),
        "the body is never repeated: {err}"
    );

    let err = discover(&server, "/missing").await.unwrap_err();
    assert!(!err.is_transient());
    assert!(
        err.to_string().contains("404") && err.to_string().contains("fhirBaseUrl"),
        "{err}"
    );

    server.on("/b/.well-known/smart-configuration", Behaviour::html(200));
    assert!(matches!(
        discover(&server, "/b").await,
        Err(DiscoveryError::NotJson { .. })
    ));

    server.on(
        "/c/.well-known/smart-configuration",
        Behaviour::json(200, json!({"issuer": "x"})),
    );
    assert!(matches!(
        discover(&server, "/c").await,
        Err(DiscoveryError::NoTokenEndpoint)
    ));

    server.on(
        "/d/.well-known/smart-configuration",
        Behaviour::json(200, json!({"token_endpoint": "/token"})),
    );
    assert!(matches!(
        discover(&server, "/d").await,
        Err(DiscoveryError::BadTokenEndpoint { .. })
    ));

    let creds = json!({"token_endpoint": "https://user:secret@ehr.example/token"});
    server.on(
        "/e/.well-known/smart-configuration",
        Behaviour::json(200, creds),
    );
    let err = discover(&server, "/e").await.unwrap_err();
    assert!(
        matches!(err, DiscoveryError::TokenEndpointRefused { .. }),
        "{err}"
    );
    assert!(!err.to_string().contains("secret"), "{err}");
}

#[tokio::test]
async fn oversized_metadata_is_cut_at_64_kib() {
    let server = FaultServer::start().await;
    server.on(
        "/big/.well-known/smart-configuration",
        Behaviour::oversized(smart::discovery::MAX_METADATA_BYTES + 1),
    );
    let err = discover(&server, "/big").await.unwrap_err();
    assert!(err.to_string().contains("64 KiB"), "{err}");
    assert!(
        matches!(
            err,
            DiscoveryError::Fetch {
                source: HttpError::TooLarge { .. },
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn redirects_are_reported_and_never_followed() {
    let server = FaultServer::start().await;
    let target = server.url("/elsewhere/.well-known/smart-configuration");
    server.on(
        "/r/.well-known/smart-configuration",
        Behaviour::redirect(&target),
    );
    server.serve_metadata("/elsewhere");
    let err = discover(&server, "/r").await.unwrap_err();
    assert!(err.to_string().contains("redirecting to"), "{err}");
    server.on("/token", Behaviour::redirect(&server.url("/other-token")));
    let err = token(&server, Duration::from_secs(5)).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(
        server
            .requests("/elsewhere/.well-known/smart-configuration")
            .is_empty()
    );
    assert!(server.requests("/other-token").is_empty());
}

#[tokio::test]
async fn plain_http_is_refused_before_any_request_unless_allowed() {
    let server = FaultServer::start().await;
    server.serve_metadata("/fhir");
    let strict = HttpClient::new(HttpPolicy::default()).unwrap();
    let err = smart::discovery::discover(&strict, &Url::parse(&server.url("/fhir")).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            DiscoveryError::Fetch {
                source: HttpError::InsecureScheme { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("--insecure-allow-http"), "{err}");
    assert!(
        server
            .requests("/fhir/.well-known/smart-configuration")
            .is_empty()
    );
}

#[tokio::test]
async fn the_token_request_form_has_exactly_the_smart_parameters() {
    let server = FaultServer::start().await;
    server.on(
        "/token",
        Behaviour::json(
            200,
            json!({"access_token": "t", "token_type": "Bearer", "expires_in": 300}),
        ),
    );
    let extra = [("resource".to_string(), "https://fhir.example".to_string())];
    token_with(&server, Duration::from_secs(5), &extra)
        .await
        .unwrap();
    let requests = server.requests("/token");
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "POST");
    let form: Vec<(String, String)> = url::form_urlencoded::parse(requests[0].body.as_bytes())
        .into_owned()
        .collect();
    let names: Vec<&str> = form.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "grant_type",
            "scope",
            "client_assertion_type",
            "client_assertion",
            "resource"
        ]
    );
    assert_eq!(form[0].1, "client_credentials");
    assert_eq!(
        form[2].1,
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
}

#[tokio::test]
async fn server_errors_and_rate_limits_are_transient_with_retry_after() {
    let server = FaultServer::start().await;
    server.on("/token", Behaviour::html(503));
    let err = token(&server, Duration::from_secs(5)).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient { retry_after: None });
    assert!(!err.to_string().contains("internal-host-42"), "{err}");

    server.on(
        "/token",
        Behaviour::json(429, json!({})).with_header("retry-after", "7"),
    );
    let err = token(&server, Duration::from_secs(5)).await.unwrap_err();
    assert_eq!(
        err.class(),
        ErrorClass::Transient {
            retry_after: Some(Duration::from_secs(7))
        }
    );

    let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(120));
    server.on(
        "/token",
        Behaviour::json(429, json!({})).with_header("retry-after", &later),
    );
    let ErrorClass::Transient {
        retry_after: Some(wait),
    } = token(&server, Duration::from_secs(5))
        .await
        .unwrap_err()
        .class()
    else {
        panic!("429 with an HTTP date must be transient with a wait");
    };
    assert!(
        wait > Duration::from_secs(100) && wait <= Duration::from_secs(120),
        "{wait:?}"
    );
}

#[tokio::test]
async fn slow_hanging_and_oversized_token_responses_end_in_bounded_time() {
    let server = FaultServer::start().await;
    server.on(
        "/token",
        Behaviour::SlowDrip {
            chunks: 100,
            delay: Duration::from_millis(100),
        },
    );
    let err = token(&server, Duration::from_secs(1)).await.unwrap_err();
    assert_eq!(err.category(), "timeout", "{err}");
    assert!(matches!(err.class(), ErrorClass::Transient { .. }));

    server.on("/token", Behaviour::Hang);
    let err = token(&server, Duration::from_secs(1)).await.unwrap_err();
    assert_eq!(err.category(), "timeout", "{err}");

    server.on("/token", Behaviour::oversized(2 * 1024 * 1024));
    let err = token(&server, Duration::from_secs(5)).await.unwrap_err();
    assert!(
        matches!(err, TokenError::Transport(HttpError::TooLarge { .. })),
        "{err}"
    );
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let key = support::signing_key(SigningAlgorithm::ES384);
    let endpoint = Url::parse(&format!("http://{addr}/token")).unwrap();
    let assertion = support::assertion(&key, "c", endpoint.as_str());
    let err = support::send(&http(Duration::from_secs(2)), &endpoint, "s", &assertion)
        .await
        .unwrap_err();
    assert_eq!(err.category(), "connect", "{err}");
    assert!(matches!(err.class(), ErrorClass::Transient { .. }));
}
