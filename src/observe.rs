//! What one request did, noted as it runs, so the door that served it can
//! write one log line and one span for it at the end: who asked (noted
//! when the door authenticates), the operation, job and result (noted by
//! the engine), and the refusal reason (noted when a refusal becomes a
//! transport error). The notes live in a task-local the door sets around
//! the request; outside a request (the sweeper) nothing is noted and the
//! engine logs by itself.

use crate::refusal::Refusal;
use std::sync::{Arc, Mutex};

/// The notes of one request. Never a token, a secret or a params value.
#[derive(Debug, Default, Clone)]
pub struct Notes {
    pub identity: Option<String>,
    pub op: Option<&'static str>,
    pub job_id: Option<String>,
    /// The decision or the job's new state.
    pub result: Option<String>,
    /// The refusal reason.
    pub reason: Option<&'static str>,
}

tokio::task_local! {
    static NOTES: Arc<Mutex<Notes>>;
}

/// Runs `f` with fresh notes and returns them with its output.
pub async fn noted<F: Future>(f: F) -> (F::Output, Notes) {
    let notes = Arc::new(Mutex::new(Notes::default()));
    let out = NOTES.scope(notes.clone(), f).await;
    let notes = notes.lock().map(|n| n.clone()).unwrap_or_default();
    (out, notes)
}

/// Changes the current request's notes; false outside a request.
fn with(f: impl FnOnce(&mut Notes)) -> bool {
    NOTES
        .try_with(|n| {
            if let Ok(mut n) = n.lock() {
                f(&mut n);
            }
        })
        .is_ok()
}

/// The caller, once authenticated.
pub fn identity(name: &str) {
    with(|n| {
        if n.identity.is_none() {
            n.identity = Some(name.to_owned());
        }
    });
}

/// The job a read is about (a write names its job through [`op`]).
pub fn job(job_id: &str) {
    with(|n| {
        if n.job_id.is_none() && !job_id.is_empty() {
            n.job_id = Some(job_id.to_owned());
        }
    });
}

/// A refusal on its way to the caller.
pub fn refused(reason: &'static str) {
    with(|n| {
        n.reason.get_or_insert(reason);
    });
}

/// An engine operation's end: its name, the caller, the job and what came
/// of it. False outside a request, where the caller logs by itself. The
/// first operation of a request is the one it is known by.
pub fn op(op: &'static str, who: &str, job_id: &str, outcome: Result<&str, &Refusal>) -> bool {
    with(|n| {
        if n.op.is_some() {
            return;
        }
        n.op = Some(op);
        if n.identity.is_none() {
            n.identity = Some(who.to_owned());
        }
        if !job_id.is_empty() {
            n.job_id = Some(job_id.to_owned());
        }
        match outcome {
            Ok(result) => n.result = Some(result.to_owned()),
            Err(r) => n.reason = Some(r.reason.as_str()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refusal::Reason;

    #[tokio::test]
    async fn notes_belong_to_their_request_only() {
        assert!(!op("decide", "agent", "j", Ok("allow")));
        let ((), notes) = noted(async {
            identity("agent-1");
            job("j-1");
            assert!(op("decide", "agent-1", "j-1", Ok("allow")));
            // The second operation of the same request does not replace it.
            op("bind", "agent-1", "j-2", Ok("bound"));
        })
        .await;
        assert_eq!(notes.identity.as_deref(), Some("agent-1"));
        assert_eq!(
            (notes.op, notes.job_id.as_deref()),
            (Some("decide"), Some("j-1"))
        );
        assert_eq!(notes.result.as_deref(), Some("allow"));
        let ((), notes) = noted(async {
            let r = Refusal::new(Reason::HashMismatch, "no");
            op("bind", "executor", "j-1", Err(&r));
        })
        .await;
        assert_eq!(notes.reason, Some("HASH_MISMATCH"));
        assert_eq!(notes.result, None);
    }
}
