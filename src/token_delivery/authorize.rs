//! Who may have a client's token (pure): a pod of the client's namespace,
//! and, when the client names consumers, only one running as one of them.
//! The pod is known by its ServiceAccount token, which the kubelet made
//! for the token-delivery audience and the API server vouched for.

use super::store::Entry;
use super::wire::DeliveredToken;

/// The pod a request comes from, as the TokenReview said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub namespace: String,
    pub service_account: String,
    pub pod: Option<String>,
}

/// `system:serviceaccount:<namespace>:<name>`; anything else is no pod.
pub fn caller(username: &str, pod: Option<String>) -> Option<Caller> {
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let (namespace, service_account) = rest.split_once(':')?;
    (!namespace.is_empty() && !service_account.is_empty() && !service_account.contains(':')).then(
        || Caller {
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
            pod,
        },
    )
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Deliver(DeliveredToken),
    /// Never, whatever is retried (HTTP 403).
    Refuse(String),
    /// Not now: no token yet, or no such client (HTTP 503, try again).
    Wait(String),
}

pub fn decide(caller: &Caller, namespace: &str, client: &str, entry: Option<&Entry>) -> Decision {
    let who = format!(
        "service account {}/{}",
        caller.namespace, caller.service_account
    );
    if caller.namespace != namespace {
        return Decision::Refuse(format!(
            "a pod of {who} cannot have the token of SmartBackendClient {namespace}/{client}: a token is delivered only to pods in its client's namespace"
        ));
    }
    let Some(entry) = entry else {
        return Decision::Wait(format!(
            "the operator has no token for SmartBackendClient {namespace}/{client}: it does not exist, its spec.token.delivery does not include CSI, or the leader has not reconciled it yet"
        ));
    };
    if !entry.consumers.is_empty() && !entry.consumers.contains(&caller.service_account) {
        return Decision::Refuse(format!(
            "{who} is not among the consumers of SmartBackendClient {namespace}/{client} (spec.token.consumers: {}): run the pod as one of them, or add it",
            entry.consumers.join(", ")
        ));
    }
    match &entry.token {
        Some(held) => Decision::Deliver(held.delivered.clone()),
        None => Decision::Wait(format!(
            "SmartBackendClient {namespace}/{client} has no token yet: see its status (kubectl describe smartbackendclient {client} -n {namespace})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn entry(consumers: &[&str], token: bool) -> Entry {
        let now = SystemTime::now();
        Entry {
            consumers: consumers.iter().map(|c| c.to_string()).collect(),
            token: token.then(|| super::super::store::Held {
                delivered: DeliveredToken::new("t", now, None, "https://f", now),
                issued_at: now,
                inputs_hash: "h".into(),
            }),
        }
    }

    fn web() -> Caller {
        caller("system:serviceaccount:team-a:web", Some("web-1".into())).unwrap()
    }

    #[test]
    fn only_service_accounts_are_callers() {
        assert_eq!(web().namespace, "team-a");
        assert_eq!(web().service_account, "web");
        for name in [
            "admin",
            "system:serviceaccount:ns",
            "system:serviceaccount::x",
            "system:serviceaccount:a:b:c",
            "system:node:n",
        ] {
            assert_eq!(caller(name, None), None, "{name}");
        }
    }

    #[test]
    fn a_pod_of_another_namespace_is_refused_even_for_a_client_it_cannot_see() {
        let d = decide(&web(), "team-b", "app", Some(&entry(&[], true)));
        assert!(
            matches!(d, Decision::Refuse(m) if m.contains("only to pods in its client's namespace"))
        );
        let d = decide(&web(), "team-b", "absent", None);
        assert!(
            matches!(d, Decision::Refuse(_)),
            "no hint whether team-b has the client"
        );
    }

    #[test]
    fn consumers_limit_the_service_accounts() {
        assert!(matches!(
            decide(&web(), "team-a", "app", Some(&entry(&[], true))),
            Decision::Deliver(_)
        ));
        assert!(matches!(
            decide(&web(), "team-a", "app", Some(&entry(&["web", "x"], true))),
            Decision::Deliver(_)
        ));
        let d = decide(&web(), "team-a", "app", Some(&entry(&["batch"], true)));
        assert!(
            matches!(d, Decision::Refuse(m) if m.contains("not among the consumers") && m.contains("batch"))
        );
        let d = decide(&web(), "team-a", "app", Some(&entry(&["batch"], false)));
        assert!(matches!(d, Decision::Refuse(_)), "refused before waiting");
    }

    #[test]
    fn no_client_or_no_token_yet_is_a_wait() {
        assert!(
            matches!(decide(&web(), "team-a", "app", None), Decision::Wait(m) if m.contains("delivery does not include CSI"))
        );
        assert!(
            matches!(decide(&web(), "team-a", "app", Some(&entry(&[], false))), Decision::Wait(m) if m.contains("no token yet"))
        );
    }
}
