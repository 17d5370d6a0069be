//! gRPC request bytes the way the Decide and Bind doors read them: the
//! protobuf decoder, then the wire job into the `JobInput` every door
//! hands the core, then the job's validation. Nothing panics, and a job
//! accepted from the wire has the same canonical form and hash as the
//! same job sent as JSON (the two doors agree).
#![no_main]

use gavel::job::{Job, Limits};
use gavel::proto::v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn check(wire: Option<pb::Job>) {
    let limits = Limits::default();
    let Ok(input) = gavel::wire::job_input(wire) else {
        return;
    };
    let Ok(job) = Job::from_input(input, &limits) else {
        return;
    };
    let canonical = job.canonical_json();
    let json = Job::from_json(canonical.as_bytes(), &limits)
        .unwrap_or_else(|e| panic!("a wire job's canonical form is refused as JSON: {e:?}\n{canonical}"));
    assert_eq!(json.canonical_json(), canonical);
    assert_eq!(json.hash(), job.hash());
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the request; the rest is its encoding.
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        if let Ok(req) = pb::DecideRequest::decode(bytes) {
            check(req.job);
        }
    } else if let Ok(req) = pb::BindRequest::decode(bytes)
        && let Some(pb::bind_request::Content::Job(j)) = req.content
    {
        check(Some(j));
    }
});
