use super::*;

#[test]
fn a_failed_trial_leaves_what_it_saw_but_not_what_the_working_key_owes() {
    let mut memory = ClientMemory::default();
    memory.learn(TokenMemo {
        attempt_failed: Some(false),
        handled_request: Some("r1".into()),
        clock_skew: Some(3),
        ..TokenMemo::default()
    });
    let trial = TokenMemo {
        attempt_failed: Some(true),
        handled_request: Some("r2".into()),
        clock_skew: Some(200),
        expires_at: Some(SystemTime::UNIX_EPOCH),
        ..TokenMemo::default()
    };
    let was = memory.learn(trial.of_failed_trial());
    assert_eq!(was, Some(3), "the skew known before");
    assert_eq!(memory.recall().last_attempt_failed, Some(false));
    assert_eq!(
        memory.recall().handled_refresh,
        Some("r1"),
        "r2 is still owed"
    );
    assert_eq!(memory.expires_at, None);
    assert_eq!(memory.clock_skew, Some(200), "the server's clock is a fact");
    // An empty memo changes nothing, and reports the skew as known.
    assert_eq!(memory.learn(TokenMemo::default()), Some(200));
    assert_eq!(memory.recall().handled_refresh, Some("r1"));
    assert_eq!(ClientMemory::default().recall().last_attempt_failed, None);
}
