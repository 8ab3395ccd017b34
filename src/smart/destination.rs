//! Which hosts the operator may contact. Namespace users choose the URLs it
//! fetches, so without a guard they could point it at internal services
//! (server-side request forgery). Loopback, link-local (cloud metadata
//! included) and unspecified addresses are refused after DNS resolution;
//! private ranges too when asked. An operator-level allow-list narrows the
//! hosts further, and a host named exactly in it is allowed even where it
//! would otherwise be refused (tests and demos reach loopback servers so).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// The destination rules, shared by the URL check and the DNS resolver.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestinationPolicy {
    /// Host patterns: `ehr.example.org`, `*.example.org`, `10.1.2.3`.
    /// Empty: any host (still subject to the address rules).
    pub allow_hosts: Vec<String>,
    /// Also refuse RFC 1918 / unique-local addresses. Off by default: many
    /// hospital EHRs live on private networks.
    pub block_private: bool,
}

fn pattern_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim().trim_end_matches('.').to_ascii_lowercase();
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => host.ends_with(&format!(".{suffix}")),
        None => pattern == host,
    }
}

/// The IPv4 address an IPv6 one stands for, where it embeds one: mapped
/// (`::ffff:a.b.c.d`), compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96` and
/// the local-use `64:ff9b:1::/48`) and 6to4 (`2002::/16`). A gateway turns
/// these into connections to the IPv4 address, so the IPv4 rules apply.
fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(mapped) = v6.to_ipv4_mapped() {
        return Some(mapped);
    }
    match s {
        [0, 0, 0, 0, 0, 0, _, _] if !v6.is_loopback() && !v6.is_unspecified() => Some(tail),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        [0x64, 0xff9b, 1, ..] => Some(tail),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

/// Cloud metadata services outside the link-local range.
const METADATA_V4: [Ipv4Addr; 2] = [
    Ipv4Addr::new(100, 100, 100, 200), // Alibaba Cloud
    Ipv4Addr::new(192, 0, 0, 192),     // Oracle Cloud (classic)
];

/// Why an address may not be contacted, if it may not.
pub fn refused_address_kind(ip: IpAddr, block_private: bool) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => embedded_ipv4(v6).map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_loopback() {
                Some("a loopback address")
            } else if v4.is_link_local() {
                Some("a link-local address (cloud metadata lives there)")
            } else if METADATA_V4.contains(&v4) {
                Some("a cloud metadata address")
            } else if v4.octets()[0] == 0 || v4.is_broadcast() || v4.is_multicast() {
                // 0.0.0.0/8 reaches this host on Linux.
                Some("not a unicast address")
            } else if block_private
                && (v4.is_private() || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
            {
                Some("a private address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("a loopback address")
            } else if (first & 0xffc0) == 0xfe80 {
                Some("a link-local address")
            } else if v6.segments() == [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254] {
                Some("a cloud metadata address")
            } else if v6.is_unspecified() || v6.is_multicast() {
                Some("not a unicast address")
            } else if block_private && (first & 0xfe00) == 0xfc00 {
                Some("a private address")
            } else {
                None
            }
        }
    }
}

impl DestinationPolicy {
    /// Named exactly (not by a wildcard) in the allow-list.
    fn explicitly_allowed(&self, host: &str) -> bool {
        self.allow_hosts
            .iter()
            .any(|p| !p.starts_with("*.") && pattern_matches(p, host))
    }

    /// Checks a host before any connection; IP literals are checked here,
    /// names again after resolution.
    pub fn check_host(&self, host: &str) -> Result<(), String> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if !self.allow_hosts.is_empty()
            && !self.allow_hosts.iter().any(|p| pattern_matches(p, bare))
        {
            return Err(format!(
                "{bare} is not in the operator's allow-list (--allow-host)"
            ));
        }
        if let Ok(ip) = bare.parse::<IpAddr>()
            && !self.explicitly_allowed(bare)
            && let Some(kind) = refused_address_kind(ip, self.block_private)
        {
            return Err(format!(
                "{bare} is {kind}; the operator does not contact it unless --allow-host names it"
            ));
        }
        Ok(())
    }

    /// Filters resolved addresses of `host`.
    pub fn filter_resolved(
        &self,
        host: &str,
        addrs: Vec<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, String> {
        if self.explicitly_allowed(host) {
            return Ok(addrs);
        }
        let mut refused = None;
        let kept: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| match refused_address_kind(a.ip(), self.block_private) {
                Some(kind) => {
                    refused = Some(kind);
                    false
                }
                None => true,
            })
            .collect();
        match (kept.is_empty(), refused) {
            (true, Some(kind)) => Err(format!(
                "{host} resolves to {kind}; the operator does not contact it unless --allow-host names it"
            )),
            (true, None) => Err(format!("{host} did not resolve")),
            (false, _) => Ok(kept),
        }
    }
}

/// A DNS resolver for reqwest that applies the policy to every answer.
pub(crate) struct GuardedResolver {
    pub policy: Arc<DestinationPolicy>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept = policy.filter_resolved(&host, addrs)?;
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        format!("{s}:443").parse().unwrap()
    }

    #[test]
    fn loopback_link_local_and_metadata_are_refused_by_default() {
        let p = DestinationPolicy::default();
        for host in [
            "127.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "[::1]",
            "[fe80::1]",
            "[fd00:ec2::254]",
            "[::ffff:127.0.0.1]",
        ] {
            assert!(p.check_host(host).is_err(), "{host}");
        }
        assert!(
            p.check_host("10.0.0.5").is_ok(),
            "private ranges are allowed by default"
        );
        assert!(p.check_host("ehr.example.org").is_ok());
    }

    #[test]
    fn ipv6_forms_that_embed_a_refused_ipv4_address_are_refused() {
        let p = DestinationPolicy::default();
        for host in [
            "::ffff:169.254.169.254",
            "::169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::7f00:1",
            "2002:a9fe:a9fe::1",
            "0.1.2.3",
            "100.100.100.200",
            "192.0.0.192",
        ] {
            assert!(
                p.check_host(&format!("[{host}]")).is_err() || p.check_host(host).is_err(),
                "{host}"
            );
            let ip: IpAddr = host.parse().unwrap();
            assert!(refused_address_kind(ip, false).is_some(), "{host}");
        }
        // Ordinary public addresses in the same notations pass.
        for host in [
            "64:ff9b::808:808",
            "2002:808:808::1",
            "::ffff:8.8.8.8",
            "2001:db8::1",
        ] {
            let ip: IpAddr = host.parse().unwrap();
            assert_eq!(refused_address_kind(ip, false), None, "{host}");
        }
    }

    #[test]
    fn private_ranges_are_refused_when_asked() {
        let p = DestinationPolicy {
            block_private: true,
            ..Default::default()
        };
        for host in [
            "10.0.0.5",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "[fd12::1]",
        ] {
            assert!(p.check_host(host).is_err(), "{host}");
        }
    }

    #[test]
    fn the_allow_list_narrows_hosts_and_exact_entries_lift_the_address_rules() {
        let p = DestinationPolicy {
            allow_hosts: vec!["*.example.org".into(), "127.0.0.1".into()],
            block_private: false,
        };
        assert!(p.check_host("fhir.example.org").is_ok());
        assert!(p.check_host("example.org.evil.net").is_err());
        assert!(p.check_host("other.net").is_err());
        assert!(p.check_host("127.0.0.1").is_ok(), "named exactly");
        assert!(
            p.filter_resolved("127.0.0.1", vec![sa("127.0.0.1")])
                .is_ok()
        );
    }

    #[test]
    fn names_resolving_to_refused_addresses_are_refused_after_resolution() {
        let p = DestinationPolicy::default();
        let err = p
            .filter_resolved("sneaky.example", vec![sa("169.254.169.254")])
            .unwrap_err();
        assert!(err.contains("link-local"), "{err}");
        let mixed = p
            .filter_resolved("mixed.example", vec![sa("127.0.0.1"), sa("93.184.216.34")])
            .unwrap();
        assert_eq!(mixed, vec![sa("93.184.216.34")]);
    }
}
