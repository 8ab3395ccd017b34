//! The leader's address and certificate, on the leader Lease: node plugins
//! read them there (a `get` of one named Lease is all the API access a
//! plugin has). Only who may write that Lease, the operator and the
//! operator namespace's administrators, can point plugins elsewhere.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::Delivery;

pub const URL_ANNOTATION: &str = "smartbackend.dev/token-delivery-url";
pub const CERTIFICATE_ANNOTATION: &str = "smartbackend.dev/token-delivery-certificate";
/// The holder identity these were written by: a plugin trusts them only
/// while the Lease names the same holder.
pub const HOLDER_ANNOTATION: &str = "smartbackend.dev/token-delivery-holder";
const FIELD_MANAGER: &str = "smart-backend-operator-token-delivery";

/// Where a plugin finds the leader, read from the Lease (pure).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announced {
    pub url: String,
    pub certificate_pem: String,
}

/// The leader the Lease announces, or why none is usable now.
pub fn announced(lease: &Lease) -> Result<Announced, String> {
    let empty = BTreeMap::new();
    let annotations = lease.metadata.annotations.as_ref().unwrap_or(&empty);
    let holder = lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref());
    let (Some(url), Some(certificate_pem)) = (
        annotations.get(URL_ANNOTATION),
        annotations.get(CERTIFICATE_ANNOTATION),
    ) else {
        return Err("the leader has not announced its token-delivery address on the Lease yet (is the operator running with --csi-listen-addr?)".into());
    };
    let written_by = annotations.get(HOLDER_ANNOTATION).map(String::as_str);
    if holder.is_some_and(|h| !h.is_empty()) && written_by != holder {
        return Err(format!(
            "the Lease's holder {} has not announced its token-delivery address yet",
            holder.unwrap_or_default()
        ));
    }
    Ok(Announced {
        url: url.clone(),
        certificate_pem: certificate_pem.clone(),
    })
}

/// Writes this replica's address and certificate on the Lease, trying
/// again until it is written or the replica no longer leads.
pub async fn announce(client: &kube::Client, delivery: &Delivery) {
    let settings = &delivery.settings;
    let api: Api<Lease> = Api::namespaced(client.clone(), &settings.lease_namespace);
    let mut annotations = BTreeMap::from([
        (URL_ANNOTATION.to_string(), delivery.url()),
        (
            CERTIFICATE_ANNOTATION.to_string(),
            delivery.certificate_pem.clone(),
        ),
    ]);
    if let Some(identity) = &settings.identity {
        annotations.insert(HOLDER_ANNOTATION.to_string(), identity.clone());
    }
    let patch = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": settings.lease_name, "annotations": annotations},
    });
    let mut wait = Duration::from_millis(500);
    while delivery.leading() {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api
            .patch(&settings.lease_name, &params, &Patch::Apply(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(url = %delivery.url(), "announced the token-delivery address on the Lease");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "announcing the token-delivery address on Lease {}/{} failed; trying again in {wait:?} (node plugins cannot fetch tokens until it is written)", settings.lease_namespace, settings.lease_name);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, annotations: &[(&str, &str)]) -> Lease {
        serde_json::from_value(json!({
            "metadata": {"name": "l", "annotations": annotations.iter().cloned().collect::<BTreeMap<_, _>>()},
            "spec": {"holderIdentity": holder},
        }))
        .unwrap()
    }

    #[test]
    fn a_plugin_trusts_only_what_the_current_holder_wrote() {
        let written = [
            (URL_ANNOTATION, "https://10.0.0.5:8443"),
            (CERTIFICATE_ANNOTATION, "PEM"),
            (HOLDER_ANNOTATION, "pod-a"),
        ];
        let ok = announced(&lease(Some("pod-a"), &written)).unwrap();
        assert_eq!(ok.url, "https://10.0.0.5:8443");
        let stale = announced(&lease(Some("pod-b"), &written)).unwrap_err();
        assert!(stale.contains("pod-b"), "{stale}");
        assert!(
            announced(&lease(Some("pod-a"), &written[..1]))
                .unwrap_err()
                .contains("not announced")
        );
        // No election: no holder, and what the one replica wrote counts.
        assert!(announced(&lease(None, &written[..2])).is_ok());
    }
}
