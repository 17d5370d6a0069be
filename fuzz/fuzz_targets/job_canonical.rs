//! The job parser never panics, and a job's canonical form reads back as
//! the same job: the same canonical bytes and the same hash.
#![no_main]

use gavel::job::{Job, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let Ok(job) = Job::from_json(data, &limits) else {
        return;
    };
    let canonical = job.canonical_json();
    let again = Job::from_json(canonical.as_bytes(), &limits)
        .unwrap_or_else(|e| panic!("the canonical form does not parse back: {e:?}\n{canonical}"));
    assert_eq!(again.canonical_json(), canonical);
    assert_eq!(again.hash(), job.hash());
});
