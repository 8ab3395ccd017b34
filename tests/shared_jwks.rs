//! Shared JWK Sets: several clients publish into one named set served at
//! its own stable URL, which a real server (oidc-provider) fetches as the
//! one jwks_uri registered for all of them.

mod support;

use serde_json::json;
use support::oidc::{Client, OidcServer, Registration};
use support::operator::Harness;

const SET: &str = "billing-app";

#[tokio::test]
async fn clients_in_one_shared_set_are_verified_through_its_single_url() {
    let h = Harness::new("shared-jwks").await;
    let set_url = h.admin_url(&format!("/jwks/{}/sets/{SET}", h.ns.name));
    let registered = |id: &'static str| Client {
        id,
        scope: "system/Patient.rs",
        key: None,
        registration: Registration::JwksUriAt(set_url.clone()),
    };
    let server = OidcServer::start(
        &[registered("claims"), registered("invoices")],
        &["system/Patient.rs"],
        300,
    );
    for name in ["claims", "invoices"] {
        h.apply(
            name,
            json!({
                "fhirBaseUrl": server.fhir_base_url, "clientId": name,
                "scopes": ["system/Patient.rs"], "signing": {"jwksSet": SET},
            }),
        )
        .await;
    }
    let mut kids = Vec::new();
    for name in ["claims", "invoices"] {
        let sbc = h.wait_ready(name).await;
        kids.push(sbc.status.unwrap().kid.unwrap());
    }
    assert_eq!(server.stats().await.1, 2, "both clients obtained a token");

    let response = reqwest::get(&set_url).await.unwrap();
    assert_eq!(
        response.headers()["cache-control"],
        "public, max-age=5",
        "the same cache headers as a client's own set"
    );
    assert_eq!(response.headers()["connection"], "close");
    let set: serde_json::Value = response.json().await.unwrap();
    let mut served: Vec<String> = set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect();
    served.sort();
    kids.sort();
    assert_eq!(served, kids);
    for key in set["keys"].as_array().unwrap() {
        assert!(key.get("d").is_none(), "public members only");
    }
    let missing = reqwest::get(h.admin_url(&format!("/jwks/{}/sets/none", h.ns.name)))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}
