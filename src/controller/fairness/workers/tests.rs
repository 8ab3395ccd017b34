use super::*;

fn now(entry: Entry) -> Place {
    match entry {
        Entry::Now(place) => place,
        Entry::Waiting(_) => panic!("expected a place at once"),
    }
}

fn waiting(entry: Entry) -> oneshot::Receiver<Place> {
    match entry {
        Entry::Waiting(turn) => turn,
        Entry::Now(_) => panic!("expected a turn in the queue"),
    }
}

impl Workers {
    fn enter_now(&self, namespace: &str) -> Entry {
        self.enter(namespace, SystemTime::UNIX_EPOCH)
    }
}

#[test]
fn a_namespace_alone_leaves_a_reserve_and_busy_ones_share_equally() {
    assert_eq!(share(16, 0), 14);
    assert_eq!(share(16, 1), 8);
    assert_eq!(share(16, 3), 4);
    assert_eq!(share(16, 40), 1);
    assert_eq!(share(2, 0), 1);
}

#[test]
fn a_burst_in_one_namespace_leaves_workers_to_another() {
    let workers = Workers::new(8);
    let entries: Vec<Entry> = (0..20).map(|_| workers.enter_now("noisy")).collect();
    assert_eq!(
        entries.iter().filter(|e| !e.waits()).count(),
        6,
        "all but the reserve start"
    );
    assert_eq!(workers.waiting(), 14);
    let quiet = now(workers.enter_now("quiet"));
    // The noisy namespace is over its half now; the quiet one is not.
    let _second_quiet = now(workers.enter_now("quiet"));
    drop(quiet);
    drop(entries);
    let queue = workers.shared.lock();
    assert_eq!(queue.running.get("quiet"), Some(&1));
    assert!(queue.waiting.is_empty(), "dropped waiters are gone");
}

#[test]
fn a_freed_place_goes_to_the_namespaces_that_wait_in_turn() {
    let workers = Workers::new(4);
    // Four places: "a" takes its two (it shares with "b"), "b" its two.
    let a: Vec<Place> = (0..2).map(|_| now(workers.enter_now("a"))).collect();
    let b: Vec<Place> = (0..2).map(|_| now(workers.enter_now("b"))).collect();
    let mut a_turns: VecDeque<_> = (0..3).map(|_| waiting(workers.enter_now("a"))).collect();
    let mut b_turns: VecDeque<_> = (0..3).map(|_| waiting(workers.enter_now("b"))).collect();
    // A place freed by "b" goes to "b"'s next: "a" is at its share.
    drop(b.into_iter().next());
    let mut b_next = b_turns.pop_front().unwrap();
    let b_place = b_next.try_recv().expect("b's first waiter started");
    assert!(a_turns.front_mut().unwrap().try_recv().is_err());
    // Once "b" has nothing left, "a" is alone: all places but the reserve.
    drop(b_turns);
    drop(b_place);
    drop(a);
    let mut started: Vec<Place> = a_turns
        .iter_mut()
        .filter_map(|t| t.try_recv().ok())
        .collect();
    assert_eq!(started.len(), 2);
    assert_eq!(workers.waiting(), 1);
    started.pop();
    assert!(
        a_turns.back_mut().unwrap().try_recv().is_ok(),
        "then the last"
    );
    assert_eq!(workers.waiting(), 0);
}

#[test]
fn a_waiter_that_gives_up_does_not_keep_a_place() {
    let workers = Workers::new(3);
    let held = now(workers.enter_now("ns"));
    let gone = waiting(workers.enter_now("ns"));
    let mut next = waiting(workers.enter_now("ns"));
    drop(gone);
    drop(held);
    let place = next.try_recv().expect("the next live waiter starts");
    assert_eq!(workers.shared.lock().running.get("ns"), Some(&1));
    drop(place);
    assert!(workers.shared.lock().running.is_empty(), "all given back");
}

#[test]
fn many_namespaces_waiting_each_get_a_turn_before_any_gets_two() {
    let workers = Workers::new(2);
    let held: Vec<Place> = vec![now(workers.enter_now("x")), now(workers.enter_now("y"))];
    let mut turns: Vec<(String, oneshot::Receiver<Place>)> = Vec::new();
    for round in 0..2 {
        for ns in ["a", "b", "c"] {
            turns.push((format!("{ns}{round}"), waiting(workers.enter_now(ns))));
        }
    }
    // Free places one at a time, and note whose waiter each one went to.
    let mut order = Vec::new();
    let mut running = held;
    for _ in 0..6 {
        running.remove(0);
        let (name, turn) = turns
            .iter_mut()
            .find_map(|(name, turn)| turn.try_recv().ok().map(|p| (name.clone(), p)))
            .map(|(name, place)| (name, Some(place)))
            .expect("a freed place goes to a waiter");
        order.push(name);
        running.extend(turn);
    }
    assert_eq!(order, ["a0", "b0", "c0", "a1", "b1", "c1"]);
}

#[test]
fn within_a_namespace_the_token_that_expires_first_goes_first() {
    let workers = Workers::new(3);
    let held = now(workers.enter_now("ns"));
    let at = |s: u64| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s);
    let mut turns: Vec<(u64, oneshot::Receiver<Place>)> = [300, 20, 3600, 20, 5]
        .into_iter()
        .map(|s| (s, waiting(workers.enter("ns", at(s)))))
        .collect();
    let mut order = Vec::new();
    let mut running = held;
    for _ in 0..turns.len() {
        drop(running);
        let (due, place) = turns
            .iter_mut()
            .enumerate()
            .find_map(|(i, (due, t))| t.try_recv().ok().map(|p| ((i, *due), p)))
            .expect("a freed place goes to a waiter");
        order.push(due);
        running = place;
    }
    // Earliest expiry first; the two due at 20 s in the order they came.
    assert_eq!(order, [(4, 5), (1, 20), (3, 20), (0, 300), (2, 3600)]);
}
