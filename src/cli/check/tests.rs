use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;

use super::{lease_holder, ready_endpoints};

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + second).unwrap()
}

fn lease(holder: Option<&str>, renewed: Option<i64>, seconds: i32) -> LeaseSpec {
    LeaseSpec {
        holder_identity: holder.map(str::to_owned),
        renew_time: renewed.map(|s| MicroTime(at(s))),
        lease_duration_seconds: Some(seconds),
        ..LeaseSpec::default()
    }
}

#[test]
fn a_lease_renewed_within_its_duration_names_its_holder() {
    let spec = lease(Some("pod-a"), Some(0), 15);
    assert_eq!(lease_holder(Some(&spec), at(15)), Ok("pod-a".to_owned()));
}

#[test]
fn a_lease_past_its_duration_says_the_holder_is_gone() {
    let spec = lease(Some("pod-a"), Some(0), 15);
    let problem = lease_holder(Some(&spec), at(16)).unwrap_err();
    assert!(
        problem.contains("pod-a last renewed the Lease 16 s ago"),
        "{problem}"
    );
}

#[test]
fn a_released_or_empty_lease_has_no_holder() {
    for spec in [lease(None, None, 15), lease(Some(""), Some(0), 15)] {
        assert_eq!(
            lease_holder(Some(&spec), at(1)),
            Err("no replica holds the Lease".to_owned())
        );
    }
    assert!(lease_holder(None, at(1)).is_err());
    let never = lease(Some("pod-a"), None, 15);
    assert!(
        lease_holder(Some(&never), at(1))
            .unwrap_err()
            .contains("never renewed")
    );
}

fn slice(port: Option<&str>, endpoints: &[(&str, Option<bool>)]) -> EndpointSlice {
    EndpointSlice {
        address_type: "IPv4".into(),
        ports: Some(vec![EndpointPort {
            name: port.map(str::to_owned),
            port: Some(8080),
            ..EndpointPort::default()
        }]),
        endpoints: endpoints
            .iter()
            .map(|(ip, ready)| Endpoint {
                addresses: vec![(*ip).to_owned()],
                conditions: Some(EndpointConditions {
                    ready: *ready,
                    ..EndpointConditions::default()
                }),
                ..Endpoint::default()
            })
            .collect(),
        ..EndpointSlice::default()
    }
}

#[test]
fn only_ready_endpoints_of_the_admin_port_are_checked() {
    let slices = [
        slice(
            Some("admin"),
            &[
                ("10.88.0.5", Some(true)),
                ("10.88.0.6", Some(false)),
                ("10.88.0.7", None),
            ],
        ),
        slice(
            Some("admin"),
            &[("fd00::5", Some(true)), ("10.88.0.5", Some(true))],
        ),
        slice(Some("other"), &[("10.88.0.9", Some(true))]),
    ];
    assert_eq!(
        ready_endpoints(&slices, "admin"),
        vec!["10.88.0.5:8080".to_owned(), "[fd00::5]:8080".to_owned()]
    );
    assert!(ready_endpoints(&[], "admin").is_empty());
}
