//! The policy loader never panics: any bytes load, or are refused with
//! findings.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(source) = std::str::from_utf8(data) {
        let _ = gavel::policy::load(source, "fuzz.yaml");
    }
});
