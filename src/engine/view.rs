//! A job as every door shows it: the record, its effective state at the
//! moment of reading, and who fills which slot of each gate. Computed once
//! here, so the gRPC answer, the JSON API and the approver page cannot
//! disagree about who counts.

use crate::approval::{ApprovalEntry, JobRecord, JobState, Millis};
use crate::policy::Gate;

/// A gate's slots as they stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateView {
    pub filled: u32,
    /// The approvers filling its slots, in the order they approved.
    pub filled_by: Vec<String>,
}

/// What an approval counts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalView {
    /// The gate it fills in the current assignment (`None`: it fills none,
    /// which only happens for approvals recorded before a reassignment
    /// could place them).
    pub gate: Option<usize>,
    /// The role it fills that gate with.
    pub role: Option<String>,
}

/// A job, read at a moment.
#[derive(Debug, Clone)]
pub struct JobView {
    pub record: JobRecord,
    /// The state at `at`: a job past its deadline reads as expired before
    /// the sweeper records it.
    pub state: JobState,
    pub at: Millis,
    /// One per gate of the evaluation, in order.
    gates: Vec<GateView>,
    /// One per approval, in order.
    approvals: Vec<ApprovalView>,
}

impl JobView {
    pub fn new(record: JobRecord, at: Millis) -> JobView {
        let gates_of = &record.evaluation.gates;
        let mut gates: Vec<GateView> = gates_of
            .iter()
            .map(|_| GateView {
                filled: 0,
                filled_by: Vec::new(),
            })
            .collect();
        // Nothing to match without gates (allowed and denied jobs).
        let assignment = if gates_of.is_empty() {
            vec![None; record.approvals.len()]
        } else {
            record.assignment()
        };
        let approvals = record
            .approvals
            .iter()
            .zip(assignment)
            .map(|(a, g)| {
                let role = g.and_then(|g| {
                    gates[g].filled += 1;
                    gates[g].filled_by.push(a.approver.clone());
                    a.roles
                        .iter()
                        .find(|r| gates_of[g].roles.contains(r))
                        .cloned()
                });
                ApprovalView { gate: g, role }
            })
            .collect();
        JobView {
            state: record.effective_state(at),
            at,
            gates,
            approvals,
            record,
        }
    }

    /// Each gate with how its slots stand.
    pub fn gates(&self) -> impl Iterator<Item = (&Gate, &GateView)> {
        self.record.evaluation.gates.iter().zip(&self.gates)
    }

    /// Each approval with what it counts for.
    pub fn approvals(&self) -> impl Iterator<Item = (&ApprovalEntry, &ApprovalView)> {
        self.record.approvals.iter().zip(&self.approvals)
    }
}
