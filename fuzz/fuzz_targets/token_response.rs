//! Token-endpoint answers, successes and OAuth error bodies alike: parsing
//! never panics, and an error repeats only a bounded part of the body.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use smart_backend_operator::smart::http::HttpResponse;
use smart_backend_operator::smart::token::parse_token_response;

fuzz_target!(|data: &[u8]| {
    // The first two bytes choose the status (100..=599), the rest is the body.
    let (status, body) = match data {
        [a, b, rest @ ..] => (100 + u16::from_be_bytes([*a, *b]) % 500, rest),
        _ => return,
    };
    let response = HttpResponse {
        status,
        content_type: Some("application/json".into()),
        retry_after: None,
        location: None,
        date: None,
        body: body.to_vec(),
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    if let Err(error) = parse_token_response(&response, now, now) {
        let _ = error.class();
        assert!(error.to_string().chars().count() < 1024);
    }
});
