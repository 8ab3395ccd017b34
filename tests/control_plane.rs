//! Proof that the end-to-end tests run against a real Kubernetes control
//! plane (kube-apiserver, etcd, kube-controller-manager built from their Go
//! modules by tests/cluster/control-plane): CRDs are established and
//! enforce their schema, garbage collection follows owner references, and
//! RBAC decides what a service account may do.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use support::cluster::{self, TestNamespace, wait_deleted, wait_for};

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("valid object")
}

#[tokio::test]
async fn a_namespace_a_secret_and_an_established_crd_with_schema_validation() {
    let ns = TestNamespace::new("cp-crd").await;
    let secrets: Api<Secret> = ns.api();
    let secret: Secret = from_json(json!({"metadata": {"name": "s1"}, "stringData": {"k": "v"}}));
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    let stored = secrets.get("s1").await.expect("get secret");
    assert_eq!(stored.data.unwrap()["k"].0, b"v");

    let suffix = &ns.name[ns.name.len() - 8..];
    let group = format!("t{suffix}.smartbackend.dev");
    let crd_name = format!("widgets.{group}");
    let crd: CustomResourceDefinition = from_json(json!({
        "metadata": {"name": crd_name},
        "spec": {
            "group": group,
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "required": ["size"],
                        "properties": {"size": {"type": "integer", "minimum": 1, "maximum": 10}}
                    }}
                }}
            }]
        }
    }));
    let crds: Api<CustomResourceDefinition> = Api::all(ns.client.clone());
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("create CRD");
    cluster::wait_established(&ns.client, &crd_name).await;

    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(&group, "v1", "Widget"));
    let widgets: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &resource);
    let good: DynamicObject = from_json(json!({
        "apiVersion": format!("{group}/v1"), "kind": "Widget",
        "metadata": {"name": "ok"}, "spec": {"size": 3}
    }));
    // The API server needs a moment after Established before it serves the type.
    wait_for(
        "the new type to be served",
        Duration::from_secs(30),
        || async { widgets.create(&PostParams::default(), &good).await.ok() },
        |_| true,
    )
    .await;
    let bad: DynamicObject = from_json(json!({
        "apiVersion": format!("{group}/v1"), "kind": "Widget",
        "metadata": {"name": "bad"}, "spec": {"size": 50}
    }));
    let err = widgets
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("schema must reject size 50");
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err}")
    };
    assert_eq!(status.code, 422, "{status:?}");
    assert!(status.message.contains("spec.size"), "{}", status.message);
    cluster::delete_cluster_object(&crds, &crd_name).await;
}

#[tokio::test]
async fn an_owned_object_is_garbage_collected_with_its_owner() {
    let ns = TestNamespace::new("cp-gc").await;
    let configmaps: Api<ConfigMap> = ns.api();
    let owner: ConfigMap = from_json(json!({"metadata": {"name": "owner"}}));
    let owner = configmaps
        .create(&PostParams::default(), &owner)
        .await
        .expect("owner");
    let secrets: Api<Secret> = ns.api();
    let owned: Secret = from_json(json!({
        "metadata": {
            "name": "owned",
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "ConfigMap",
                "name": owner.name_any(), "uid": owner.meta().uid.clone().expect("uid")
            }]
        },
        "stringData": {"k": "v"}
    }));
    secrets
        .create(&PostParams::default(), &owned)
        .await
        .expect("owned");
    configmaps
        .delete("owner", &Default::default())
        .await
        .expect("delete owner");
    wait_deleted(&secrets, "owned", Duration::from_secs(60)).await;
}

#[tokio::test]
async fn rbac_decides_what_a_service_account_may_do() {
    let ns = TestNamespace::new("cp-rbac").await;
    let accounts: Api<ServiceAccount> = ns.api();
    accounts
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "reader"}})),
        )
        .await
        .expect("service account");
    let roles: Api<Role> = ns.api();
    roles
        .create(
            &PostParams::default(),
            &from_json(json!({
                "metadata": {"name": "secret-reader"},
                "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
            })),
        )
        .await
        .expect("role");
    let bindings: Api<RoleBinding> = ns.api();
    bindings
        .create(
            &PostParams::default(),
            &from_json(json!({
                "metadata": {"name": "reader"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "secret-reader"},
                "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns.name}]
            })),
        )
        .await
        .expect("binding");
    let who = format!("--as=system:serviceaccount:{}:reader", ns.name);
    let can = |args: &[&str]| {
        let output = cluster::kubectl(&[&["auth", "can-i"], args, &[who.as_str()]].concat());
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    assert_eq!(can(&["get", "secrets", "-n", &ns.name]), "yes");
    assert_eq!(can(&["delete", "secrets", "-n", &ns.name]), "no");
    assert_eq!(can(&["get", "secrets", "-n", "default"]), "no");
    assert_eq!(can(&["list", "secrets", "--all-namespaces"]), "no");
}
