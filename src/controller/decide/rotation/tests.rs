use super::*;

const MAX_AGE: Duration = Duration::from_secs(300);
const MARGIN: Duration = Duration::from_secs(60);
const LIFETIME: Duration = Duration::from_secs(300);

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn key(kid: &str, state: KeyState, since: u64) -> KeyEntry {
    KeyEntry {
        kid: kid.into(),
        algorithm: SigningAlgorithm::ES384,
        state,
        since: t(since),
    }
}

fn inputs(now: u64) -> Inputs<'static> {
    Inputs {
        now: t(now),
        every: None,
        requested: None,
        handled: None,
        server_algorithms: None,
        preferred: SigningAlgorithm::ES384,
        required: None,
        trial_not_before: None,
        next_served: None,
        jwks_max_age: MAX_AGE,
        margin: MARGIN,
        assertion_lifetime: LIFETIME,
    }
}

const DAY: u64 = 86_400;

#[test]
fn each_stored_list_leads_to_one_step() {
    use KeyState::*;
    let es = ["ES384".to_string()];
    let rs = ["RS384".to_string()];
    let (es, rs) = (&es[..], &rs[..]);
    let cases: Vec<(&str, Vec<KeyEntry>, Inputs<'_>, Step)> = vec![
        (
            "no key yet: the first is generated as before",
            vec![],
            inputs(0),
            Step::Steady { revisit: None },
        ),
        (
            "one key, no rotation asked",
            vec![key("a", Active, 0)],
            inputs(10 * DAY),
            Step::Steady { revisit: None },
        ),
        (
            "scheduled, not due: come back when it is",
            vec![key("a", Active, 0)],
            Inputs {
                every: Some(Duration::from_secs(30 * DAY)),
                ..inputs(DAY)
            },
            Step::Steady {
                revisit: Some(t(30 * DAY)),
            },
        ),
        (
            "scheduled and due",
            vec![key("a", Active, 0)],
            Inputs {
                every: Some(Duration::from_secs(30 * DAY)),
                ..inputs(30 * DAY)
            },
            Step::GenerateNext {
                algorithm: SigningAlgorithm::ES384,
                trigger: Trigger::Schedule,
            },
        ),
        (
            "asked by annotation",
            vec![key("a", Active, 0)],
            Inputs {
                requested: Some("2026-11-30"),
                ..inputs(5)
            },
            Step::GenerateNext {
                algorithm: SigningAlgorithm::ES384,
                trigger: Trigger::Requested("2026-11-30".into()),
            },
        ),
        (
            "an annotation already acted on",
            vec![key("a", Active, 0)],
            Inputs {
                requested: Some("x"),
                handled: Some("x"),
                ..inputs(5)
            },
            Step::Steady { revisit: None },
        ),
        (
            "the server still lists the algorithm",
            vec![key("a", Active, 0)],
            Inputs {
                server_algorithms: Some(es),
                ..inputs(5)
            },
            Step::Steady { revisit: None },
        ),
        (
            "the server stopped listing the algorithm: the new key takes its choice",
            vec![key("a", Active, 0)],
            Inputs {
                server_algorithms: Some(rs),
                preferred: SigningAlgorithm::RS384,
                ..inputs(5)
            },
            Step::GenerateNext {
                algorithm: SigningAlgorithm::RS384,
                trigger: Trigger::Algorithm(SigningAlgorithm::RS384),
            },
        ),
        (
            "spec.signing.algorithm names another algorithm: it wins over the server's choice",
            vec![key("a", Active, 0)],
            Inputs {
                server_algorithms: Some(es),
                required: Some(SigningAlgorithm::RS384),
                ..inputs(5)
            },
            Step::GenerateNext {
                algorithm: SigningAlgorithm::RS384,
                trigger: Trigger::Algorithm(SigningAlgorithm::RS384),
            },
        ),
        (
            "the server refused the next key: tried again after the backoff",
            vec![key("a", Active, 0), key("b", Next, 1000)],
            Inputs {
                trial_not_before: Some(t(1500)),
                ..inputs(1400)
            },
            Step::AwaitTrial {
                kid: "b".into(),
                until: t(1500),
            },
        ),
        (
            "the backoff after a refusal is over",
            vec![key("a", Active, 0), key("b", Next, 1000)],
            Inputs {
                trial_not_before: Some(t(1500)),
                ..inputs(1500)
            },
            Step::Trial { kid: "b".into() },
        ),
        (
            "next just published: EHRs may hold the old JWKS until max-age and margin",
            vec![key("a", Active, 0), key("b", Next, 1000)],
            inputs(1000 + 300),
            Step::AwaitPublication {
                kid: "b".into(),
                until: t(1000 + 300 + 60),
            },
        ),
        (
            "next published long enough: a trial",
            vec![key("a", Active, 0), key("b", Next, 1000)],
            inputs(1000 + 360),
            Step::Trial { kid: "b".into() },
        ),
        (
            "a rotation in progress ignores a new request until it ends",
            vec![key("a", Active, 0), key("b", Next, 1000)],
            Inputs {
                requested: Some("again"),
                ..inputs(1100)
            },
            Step::AwaitPublication {
                kid: "b".into(),
                until: t(1360),
            },
        ),
        (
            "retiring, assertions it signed may still be checked",
            vec![key("b", Active, 2000), key("a", Retiring, 2000)],
            inputs(2000 + 599),
            Step::Steady {
                revisit: Some(t(2600)),
            },
        ),
        (
            "retiring past the last assertion and a max-age: dropped",
            vec![key("b", Active, 2000), key("a", Retiring, 2000)],
            inputs(2600),
            Step::DropRetiring { kid: "a".into() },
        ),
        (
            "a second rotation waits for the first retiring key to go",
            vec![
                key("b", Active, 2000),
                key("a", Retiring, 2000),
                key("c", Next, 2001),
            ],
            inputs(2001 + 360),
            Step::Steady {
                revisit: Some(t(2600)),
            },
        ),
    ];
    for (what, keys, inputs, expected) in cases {
        assert_eq!(plan(&keys, &inputs), expected, "{what}");
    }
}

#[test]
fn a_whole_rotation_never_signs_with_an_unpublished_key_nor_drops_one_still_needed() {
    let period = Duration::from_secs(30 * DAY);
    let every = Some(period);
    let mut keys = vec![key("a", KeyState::Active, 0)];
    let mut signed_by: Vec<(SystemTime, String)> = Vec::new();
    let mut now = 0;
    let mut steps = Vec::new();
    // Walk a minute at a time for 31 days' worth of steps near the change.
    for minute in 0.. {
        now = 30 * DAY - 60 + minute * 60;
        let step = plan(
            &keys,
            &Inputs {
                every,
                ..inputs(now)
            },
        );
        let active = find(&keys, KeyState::Active).unwrap().kid.clone();
        signed_by.push((t(now), active.clone()));
        match &step {
            Step::GenerateNext { algorithm, .. } => keys = add_next(&keys, "b", *algorithm, t(now)),
            Step::Trial { kid } => {
                let next = find(&keys, KeyState::Next).unwrap();
                assert!(
                    t(now) >= next.since + MAX_AGE + MARGIN,
                    "signed with {kid} before it was published long enough"
                );
                keys = promote(&keys, t(now));
            }
            Step::DropRetiring { kid } => {
                let retiring = find(&keys, KeyState::Retiring).unwrap();
                let last_signed = signed_by.iter().rev().find(|(_, k)| k == kid).unwrap().0;
                assert!(
                    t(now) >= last_signed + LIFETIME + MAX_AGE,
                    "dropped {kid} while needed"
                );
                assert!(retiring.since <= last_signed + Duration::from_secs(60));
                keys = drop_key(&keys, kid);
            }
            Step::Steady { .. } | Step::AwaitPublication { .. } | Step::AwaitTrial { .. } => {}
        }
        if !matches!(step, Step::Steady { .. } | Step::AwaitPublication { .. }) {
            steps.push(step);
        }
        if keys.len() == 1 && keys[0].kid == "b" {
            break;
        }
    }
    assert_eq!(
        steps,
        vec![
            Step::GenerateNext {
                algorithm: SigningAlgorithm::ES384,
                trigger: Trigger::Schedule
            },
            Step::Trial { kid: "b".into() },
            Step::DropRetiring { kid: "a".into() },
        ]
    );
    assert_eq!(keys[0].state, KeyState::Active);
    assert!(
        now < 30 * DAY + 30 * 60,
        "the rotation took {} s",
        now - 30 * DAY
    );
    // The next scheduled rotation counts from when b became active.
    let step = plan(
        &keys,
        &Inputs {
            every,
            ..inputs(now)
        },
    );
    assert_eq!(
        step,
        Step::Steady {
            revisit: Some(keys[0].since + period)
        }
    );
}

#[test]
fn promotion_and_removal_keep_at_most_one_key_per_state() {
    let keys = vec![key("a", KeyState::Active, 0), key("b", KeyState::Next, 10)];
    let promoted = promote(&keys, t(400));
    assert_eq!(
        promoted,
        vec![
            KeyEntry {
                since: t(400),
                state: KeyState::Retiring,
                ..key("a", KeyState::Active, 0)
            },
            KeyEntry {
                since: t(400),
                state: KeyState::Active,
                ..key("b", KeyState::Next, 10)
            },
        ]
    );
    let replaced = add_next(&keys, "c", SigningAlgorithm::RS384, t(20));
    assert_eq!(
        replaced
            .iter()
            .filter(|k| k.state == KeyState::Next)
            .count(),
        1
    );
    assert_eq!(find(&replaced, KeyState::Next).unwrap().kid, "c");
    assert_eq!(drop_key(&promoted, "a").len(), 1);
}

#[test]
fn a_refused_next_key_is_tried_again_after_a_minute_doubling_to_an_hour() {
    let waits: Vec<u64> = (1..=9).map(|n| trial_retry(n).as_secs()).collect();
    assert_eq!(waits, [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
}

#[test]
fn a_next_key_waits_from_when_every_replica_serves_it() {
    use KeyState::*;
    let keys = [key("a", Active, 0), key("b", Next, 1000)];
    // The status carrying "b" was first written at 1500 (its write failed
    // until then): the wait counts from there, not from the Secret's 1000.
    let served = Inputs {
        next_served: Some(t(1500)),
        ..inputs(1000 + 360)
    };
    assert_eq!(
        plan(&keys, &served),
        Step::AwaitPublication {
            kid: "b".into(),
            until: t(1500 + 360)
        }
    );
    assert_eq!(
        plan(
            &keys,
            &Inputs {
                now: t(1860),
                ..served
            }
        ),
        Step::Trial { kid: "b".into() }
    );
    // Never earlier than the key's own time.
    let early = Inputs {
        next_served: Some(t(900)),
        ..inputs(1200)
    };
    assert_eq!(
        plan(&keys, &early),
        Step::AwaitPublication {
            kid: "b".into(),
            until: t(1360)
        }
    );
}

#[test]
fn served_since_counts_from_the_first_status_that_listed_the_key() {
    let next = key("b", KeyState::Next, 1000);
    // No status listed it yet: not served, count from now.
    assert_eq!(served_since(&next, false, None, t(1200)), t(1200));
    assert_eq!(
        served_since(&next, false, Some(("b", t(1100))), t(1200)),
        t(1200)
    );
    // Listed, and recorded for this key.
    assert_eq!(
        served_since(&next, true, Some(("b", t(1100))), t(1200)),
        t(1100)
    );
    // Recorded for another key, or a status from before the record: the key's own time.
    assert_eq!(
        served_since(&next, true, Some(("c", t(1100))), t(1200)),
        t(1000)
    );
    assert_eq!(served_since(&next, true, None, t(1200)), t(1000));
}

#[test]
fn falling_back_makes_the_retiring_key_sign_and_the_refused_one_next() {
    use KeyState::*;
    let keys = [
        key("new", Active, 400),
        key("old", Retiring, 400),
        key("x", Next, 450),
    ];
    let fallen = fall_back(&keys, t(500));
    assert_eq!(fallen, vec![key("new", Next, 500), key("old", Active, 500)]);
    // It is tried again only after the max-age and margin from now.
    let mut entries = fallen.clone();
    entries.sort_by_key(|k| k.state != Active);
    assert_eq!(
        plan(&entries, &inputs(600)),
        Step::AwaitPublication {
            kid: "new".into(),
            until: t(860)
        }
    );
}
