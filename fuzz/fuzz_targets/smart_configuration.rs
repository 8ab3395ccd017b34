//! SMART metadata from an untrusted server: parsing never panics, and a
//! parsed document always has an absolute token endpoint.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smart_backend_operator::smart::SmartConfiguration;

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = SmartConfiguration::parse(data) {
        assert!(config.token_endpoint.has_host());
        let _ = config.choose_algorithm(None, None);
        let _ = config.warnings(&["system/Patient.rs".into()], None);
    }
});
