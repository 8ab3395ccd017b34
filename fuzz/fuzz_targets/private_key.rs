//! Private keys as a user pastes them into a Secret (PEM of any kind, or a
//! JWK): parsing never panics, and a parsed key can sign.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smart_backend_operator::smart::PrivateKey;

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = PrivateKey::parse(data) {
        let _ = key.thumbprint();
    }
});
