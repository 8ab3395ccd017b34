//! Each AWS KMS failure the operator meets keeps the token and says what to
//! do: a missing `kms:Sign` names the action to grant (and signing resumes
//! once granted, with no restart), a missing alias names what to create, a
//! missing next key is reported while the key signs on.
//! Apart from tests/kms_operator.rs because the operator's credentials are
//! the process's environment.

mod support;

use serde_json::json;
use smart_backend_operator::crd::REFRESH_REQUESTED_ANNOTATION;
use smart_backend_operator::smart::signer::KmsSettings;
use support::key_managers::{SCOPE, failed_with, server_fetching};
use support::moto::Moto;
use support::operator::{Harness, condition};

#[tokio::test]
async fn kms_failures_keep_the_token_and_say_what_to_do() {
    let moto = Moto::start();
    moto.operator_user("kms:GetPublicKey");
    let endpoint = moto.endpoint.parse().unwrap();
    let h = Harness::with("kms-fail", move |settings| {
        settings.kms = Some(KmsSettings {
            region: Some("us-east-1".into()),
            endpoint: Some(endpoint),
            alias_prefix: "sbo".into(),
        });
    })
    .await;
    let ns = h.ns.name.clone();
    moto.create_key("ECC_NIST_P384", &format!("alias/sbo/{ns}/billing"));
    let server = server_fetching(&h, "billing");
    let spec = |key: &str| {
        json!({"fhirBaseUrl": server.fhir_base_url, "clientId": "billing", "scopes": [SCOPE],
               "signing": {"awsKms": {"key": key}}})
    };
    h.apply("billing", spec("billing")).await;
    let message = failed_with(&h, "billing", "TokenReady", "KeyManagerForbidden").await;
    assert!(message.contains("allow kms:Sign"), "{message}");

    // Granted: the next try signs.
    moto.grant("operator", "kms:GetPublicKey,kms:Sign");
    h.annotate("billing", REFRESH_REQUESTED_ANNOTATION, "granted")
        .await;
    h.wait_ready("billing").await;
    let token = h.wait_secret("billing-token").await;

    // An alias that does not exist is named, with what to create.
    h.apply("other", spec("nope")).await;
    let message = failed_with(&h, "other", "KeyReady", "KeyManagerKeyNotFound").await;
    assert!(
        message.contains(&format!("alias/sbo/{ns}/nope")) && message.contains("create it"),
        "{message}"
    );
    // A next key that does not exist is reported; the key signs on.
    h.apply(
        "billing",
        json!({"fhirBaseUrl": server.fhir_base_url, "clientId": "billing", "scopes": [SCOPE],
               "signing": {"awsKms": {"key": "billing", "nextKey": "gone"}}}),
    )
    .await;
    let sbcs = h.sbcs();
    let reported = support::cluster::wait_for(
        "the missing next key reported",
        std::time::Duration::from_secs(60),
        || async { sbcs.get("billing").await.ok() },
        |sbc| {
            condition(sbc, "KeyReady").is_some_and(|c| {
                c.status == "True"
                    && c.message
                        .contains("(spec.signing.awsKms.nextKey) is not published")
            })
        },
    )
    .await;
    let message = condition(&reported, "KeyReady").unwrap().message.clone();
    assert!(
        message.contains(&format!("alias/sbo/{ns}/gone")),
        "{message}"
    );
    // The working client's token was kept throughout.
    assert_eq!(
        Harness::value(&h.secret("billing-token").await.unwrap(), "access_token"),
        Harness::value(&token, "access_token")
    );
    assert_eq!(server.stats().await, (1, 1));
}
