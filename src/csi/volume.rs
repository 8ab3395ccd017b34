//! What the kubelet asks of a volume, read from NodePublishVolume's volume
//! context (pure): which pod, which client, and the pod's ServiceAccount
//! token for the token-delivery audience.

use std::collections::HashMap;
use std::fmt;

/// The volume attribute that names the SmartBackendClient.
pub const CLIENT_ATTRIBUTE: &str = "client";
const POD_NAME: &str = "csi.storage.k8s.io/pod.name";
const POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
const POD_UID: &str = "csi.storage.k8s.io/pod.uid";
const SERVICE_ACCOUNT: &str = "csi.storage.k8s.io/serviceAccount.name";
const TOKENS: &str = "csi.storage.k8s.io/serviceAccount.tokens";
const EPHEMERAL: &str = "csi.storage.k8s.io/ephemeral";
/// The longest client name (a Kubernetes object name).
const MAX_NAME: usize = 253;

/// A pod's ServiceAccount token: sent to the operator, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct PodCredential(String);

impl PodCredential {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PodCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PodCredential(..)")
    }
}

/// One pod's request for one client's token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeRequest {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub service_account: String,
    pub client: String,
    pub credential: PodCredential,
}

impl VolumeRequest {
    /// `namespace/client`, for messages.
    pub fn client_ref(&self) -> String {
        format!("{}/{}", self.namespace, self.client)
    }
}

/// Reads the request from the volume context. `audience` is the one the
/// CSIDriver object asks the kubelet to make a token for. The error says
/// what is wrong and what to do, for the pod's event.
pub fn read(context: &HashMap<String, String>, audience: &str) -> Result<VolumeRequest, String> {
    let get = |key: &str| {
        context
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    if get(EPHEMERAL) != Some("true") {
        return Err("this driver serves only inline ephemeral volumes: declare it in the pod as `csi: {driver: smartbackend.dev, volumeAttributes: {client: <name>}}`".into());
    }
    let client = get(CLIENT_ATTRIBUTE).ok_or(
        "the volume names no SmartBackendClient: set volumeAttributes.client to the name of one in the pod's namespace",
    )?;
    if client.len() > MAX_NAME
        || !client
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Err(format!(
            "volumeAttributes.client must be the name of a SmartBackendClient (lowercase letters, digits, '-' and '.', at most {MAX_NAME})"
        ));
    }
    if let Some(extra) = context
        .keys()
        .find(|k| !k.starts_with("csi.storage.k8s.io/") && k.as_str() != CLIENT_ATTRIBUTE)
    {
        return Err(format!(
            "unknown volume attribute {extra:?}: the only attribute is `client`"
        ));
    }
    let pod_info = "the kubelet sent no pod information: the CSIDriver object smartbackend.dev must have podInfoOnMount: true (install it with the chart)";
    let namespace = get(POD_NAMESPACE).ok_or(pod_info)?;
    let pod = get(POD_NAME).ok_or(pod_info)?;
    let pod_uid = get(POD_UID).ok_or(pod_info)?;
    let service_account = get(SERVICE_ACCOUNT).ok_or(pod_info)?;
    let credential = credential(get(TOKENS), audience)?;
    Ok(VolumeRequest {
        namespace: namespace.into(),
        pod: pod.into(),
        pod_uid: pod_uid.into(),
        service_account: service_account.into(),
        client: client.into(),
        credential,
    })
}

/// The token for `audience` from the kubelet's
/// `{"<audience>": {"token": "...", "expirationTimestamp": "..."}}`.
fn credential(tokens: Option<&str>, audience: &str) -> Result<PodCredential, String> {
    let missing = || {
        format!(
            "the kubelet sent no ServiceAccount token for the audience {audience:?}: the CSIDriver object smartbackend.dev must list it in tokenRequests (install it with the chart, whose csi.audience must match the operator's --csi-audience)"
        )
    };
    let tokens: serde_json::Value =
        serde_json::from_str(tokens.ok_or_else(missing)?).map_err(|_| missing())?;
    tokens
        .get(audience)
        .and_then(|t| t.get("token"))
        .and_then(serde_json::Value::as_str)
        .filter(|t| !t.is_empty())
        .map(|t| PodCredential(t.to_string()))
        .ok_or_else(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> HashMap<String, String> {
        [
            (EPHEMERAL, "true"),
            (CLIENT_ATTRIBUTE, "app"),
            (POD_NAMESPACE, "team-a"),
            (POD_NAME, "web-1"),
            (POD_UID, "0c4e"),
            (SERVICE_ACCOUNT, "web"),
            (
                TOKENS,
                r#"{"smartbackend.dev":{"token":"sa-token","expirationTimestamp":"x"}}"#,
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn reads_the_pod_the_client_and_the_credential() {
        let request = read(&context(), "smartbackend.dev").unwrap();
        assert_eq!(request.namespace, "team-a");
        assert_eq!(request.pod, "web-1");
        assert_eq!(request.service_account, "web");
        assert_eq!(request.client, "app");
        assert_eq!(request.credential.expose(), "sa-token");
        assert_eq!(request.client_ref(), "team-a/app");
        assert!(!format!("{request:?}").contains("sa-token"));
    }

    #[test]
    fn says_what_is_missing() {
        let without = |key: &str| {
            let mut c = context();
            c.remove(key);
            read(&c, "smartbackend.dev").unwrap_err()
        };
        assert!(without(EPHEMERAL).contains("inline ephemeral"));
        assert!(without(CLIENT_ATTRIBUTE).contains("volumeAttributes.client"));
        assert!(without(POD_NAMESPACE).contains("podInfoOnMount"));
        assert!(without(TOKENS).contains("tokenRequests"));
        let other = read(&context(), "another").unwrap_err();
        assert!(other.contains("\"another\""), "{other}");
    }

    #[test]
    fn refuses_odd_names_and_unknown_attributes() {
        let mut c = context();
        c.insert(CLIENT_ATTRIBUTE.into(), "../etc".into());
        assert!(
            read(&c, "smartbackend.dev")
                .unwrap_err()
                .contains("lowercase")
        );
        let mut c = context();
        c.insert("clientt".into(), "x".into());
        assert!(
            read(&c, "smartbackend.dev")
                .unwrap_err()
                .contains("\"clientt\"")
        );
        let mut c = context();
        c.insert(TOKENS.into(), "not json".into());
        assert!(
            read(&c, "smartbackend.dev")
                .unwrap_err()
                .contains("tokenRequests")
        );
    }
}
