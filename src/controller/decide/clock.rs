//! Clocks that disagree: what a server's `Date` header says about its clock
//! against this host's, in words a person can act on.

/// What a skewed clock means, in words.
pub fn note(skew: i64, server: &str) -> String {
    let direction = if skew > 0 { "ahead of" } else { "behind" };
    format!(
        "ClockSkew: the clock of {server} is {}s {direction} this host's (by its Date header); assertions may be refused as not yet valid or expired: check time synchronisation (NTP) on the nodes and at the server",
        skew.unsigned_abs()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_note_says_which_way_and_how_far() {
        let ahead = crate::controller::decide::clock::note(120, "ehr.example");
        assert!(
            ahead.starts_with("ClockSkew: ") && ahead.contains("120s ahead of"),
            "{ahead}"
        );
        assert!(super::note(-45, "ehr.example").contains("45s behind"));
    }
}
