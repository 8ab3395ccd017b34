use super::*;

#[test]
fn the_breaker_opens_after_repeated_unreachable_requests_and_lets_one_through_after_the_cool_down()
{
    let t0 = Instant::now();
    let mut b = Breaker::default();
    for i in 1..OPEN_AFTER {
        assert!(!b.record(false, t0), "{i}");
        assert!(b.allow(t0).is_ok());
    }
    assert!(b.record(false, t0), "the fifth opens it");
    assert_eq!(b.allow(t0 + Duration::from_secs(1)), Err(t0 + COOL_DOWN));
    // After the cool-down one request goes; the next waits again.
    let later = t0 + COOL_DOWN;
    assert!(b.allow(later).is_ok());
    assert!(b.allow(later + Duration::from_secs(1)).is_err());
    // It failed again: open for another cool-down, not "opened" anew.
    assert!(!b.record(false, later + Duration::from_secs(2)));
    // An answer of any kind closes it.
    b.record(true, later + COOL_DOWN * 2);
    assert_eq!(b, Breaker::default());
}

#[test]
fn a_server_answering_with_errors_keeps_the_breaker_closed() {
    let t0 = Instant::now();
    let mut b = Breaker::default();
    for _ in 0..10 {
        b.record(false, t0);
        b.record(true, t0);
    }
    assert!(b.allow(t0).is_ok());
}

#[test]
fn slots_are_taken_without_waiting_and_freed_with_the_permit() {
    let servers = Servers::new(2, 8);
    let now = Instant::now();
    let Admission::Go(a) = servers.admit("ehr:443", "n", now, None) else {
        panic!()
    };
    let Admission::Go(_b) = servers.admit("ehr:443", "m", now, None) else {
        panic!()
    };
    assert!(matches!(
        servers.admit("ehr:443", "o", now, None),
        Admission::Busy
    ));
    assert!(matches!(
        servers.admit("other:443", "n", now, None),
        Admission::Go(_)
    ));
    drop(a);
    assert!(matches!(
        servers.admit("ehr:443", "n", now, None),
        Admission::Go(_)
    ));
    servers.prune();
    assert_eq!(
        servers.len(),
        1,
        "the server with a request in flight is kept"
    );
}

#[test]
fn an_open_breaker_is_reported_with_when_it_closes() {
    let servers = Servers::new(4, 8);
    let now = Instant::now();
    for _ in 0..OPEN_AFTER {
        servers.record("hang:443", "n", false, now);
    }
    match servers.admit("hang:443", "n", now, None) {
        Admission::Open { until, failures } => {
            assert_eq!(until, now + COOL_DOWN);
            assert_eq!(failures, OPEN_AFTER);
        }
        _ => panic!("the breaker is open"),
    }
    // Another tenant of the same host is not paused by it.
    assert!(matches!(
        servers.admit("hang:443", "other", now, None),
        Admission::Go(_)
    ));
}

#[test]
fn every_busy_namespace_gets_an_equal_part_and_a_newcomer_still_finds_room() {
    assert_eq!(fair_share(16, 0), 8);
    assert_eq!(fair_share(16, 1), 5);
    assert_eq!(fair_share(16, 2), 4);
    assert_eq!(fair_share(16, 100), 1);
    assert_eq!(server_share(4), 3);
    assert_eq!(server_share(1), 1);
    // Three greedy namespaces cannot take every worker between them.
    let servers = Servers::new(100, 12);
    let now = Instant::now();
    let mut held = Vec::new();
    for round in 0..12 {
        for ns in ["a", "b", "c"] {
            if let Admission::Go(p) = servers.admit(&format!("s{round}{ns}:443"), ns, now, None) {
                held.push(p);
            }
        }
    }
    assert!(held.len() < 12, "{} of 12 workers taken", held.len());
    assert!(matches!(
        servers.admit("s:443", "newcomer", now, None),
        Admission::Go(_)
    ));
}

#[test]
fn one_namespace_leaves_a_slot_of_each_server_to_the_others() {
    let servers = Servers::new(4, 64);
    let now = Instant::now();
    let held: Vec<Permit> = (0..3)
        .map(|_| match servers.admit("ehr:443", "greedy", now, None) {
            Admission::Go(p) => p,
            _ => panic!("within its share of the server"),
        })
        .collect();
    assert!(matches!(
        servers.admit("ehr:443", "greedy", now, None),
        Admission::Busy
    ));
    assert!(matches!(
        servers.admit("ehr:443", "other", now, None),
        Admission::Go(_)
    ));
    drop(held);
}

#[test]
fn one_namespace_takes_at_most_its_share_of_requests_across_all_servers() {
    let servers = Servers::new(4, 6);
    let now = Instant::now();
    let held: Vec<Permit> = (0..3)
        .map(
            |i| match servers.admit(&format!("slow-{i}:443"), "greedy", now, None) {
                Admission::Go(permit) => permit,
                _ => panic!("within the share"),
            },
        )
        .collect();
    assert!(matches!(
        servers.admit("slow-9:443", "greedy", now, None),
        Admission::Busy
    ));
    assert!(servers.admit_namespace("greedy").is_none(), "metadata too");
    assert!(matches!(
        servers.admit("slow-0:443", "other", now, None),
        Admission::Go(_)
    ));
    drop(held);
    assert!(servers.admit_namespace("greedy").is_some());
    servers.prune();
    assert!(
        servers.lock().namespaces.is_empty(),
        "idle namespaces are forgotten"
    );
}

#[test]
fn a_token_that_would_expire_before_the_breaker_lets_a_trial_through_goes_anyway() {
    let now = Instant::now();
    let until = now + Duration::from_secs(20);
    // The trial comes in 20 s; if it fails, the next in 50 s.
    assert!(cannot_wait(until, now, Some(Duration::from_secs(10))));
    assert!(cannot_wait(until, now, Some(Duration::from_secs(49))));
    assert!(!cannot_wait(until, now, Some(Duration::from_secs(50))));
    assert!(!cannot_wait(until, now, Some(Duration::from_secs(3600))));
    assert!(!cannot_wait(until, now, None), "no valid token: it waits");

    let servers = Servers::new(2, 8);
    for _ in 0..OPEN_AFTER {
        servers.record("flaky:443", "n", false, now);
    }
    let short = Some(Duration::from_secs(30));
    let long = Some(Duration::from_secs(3600));
    assert!(matches!(
        servers.admit("flaky:443", "n", now, long),
        Admission::Open { .. }
    ));
    let Admission::Go(first) = servers.admit("flaky:443", "n", now, short) else {
        panic!("a token with 30 s left passes a breaker open for 30 s")
    };
    // It still takes the server's slots (one namespace holds all but one).
    assert!(matches!(
        servers.admit("flaky:443", "n", now, short),
        Admission::Busy
    ));
    drop(first);
    // Passing took no half-open trial: the breaker is as it was.
    let after = now + COOL_DOWN;
    assert!(matches!(
        servers.admit("flaky:443", "n", after, long),
        Admission::Go(_)
    ));
}
