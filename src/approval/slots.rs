//! Who fills which slot: a maximum bipartite matching of approvals to gate
//! slots, so one person fills at most one slot across all gates and an
//! earlier approval may move to another gate when that lets a later one
//! count. Pure.

use super::ApprovalEntry;
use crate::policy::{Channel, Gate};

/// A person as the slot matching sees them.
pub(crate) struct Candidate<'a> {
    pub(crate) roles: &'a [String],
    pub(crate) channel: Channel,
}

impl<'a> From<&'a ApprovalEntry> for Candidate<'a> {
    fn from(a: &'a ApprovalEntry) -> Self {
        Candidate {
            roles: &a.roles,
            channel: a.channel,
        }
    }
}

pub(crate) fn can_fill(p: &Candidate<'_>, g: &Gate) -> bool {
    (g.channels.is_empty() || g.channels.contains(&p.channel))
        && p.roles.iter().any(|r| g.roles.contains(r))
}

/// A maximum matching of people to gate slots (each gate has `approvers`
/// slots; one person fills at most one slot across all gates). Returns its
/// size and, per person, the gate they fill. Augmenting paths let an earlier
/// approval move to another gate when that lets a later one count.
pub(crate) fn max_assignment(
    gates: &[Gate],
    people: &[Candidate<'_>],
) -> (usize, Vec<Option<usize>>) {
    let slots: Vec<usize> = gates
        .iter()
        .enumerate()
        .flat_map(|(g, gate)| std::iter::repeat_n(g, gate.approvers as usize))
        .collect();
    let mut slot_owner: Vec<Option<usize>> = vec![None; slots.len()];
    fn augment(
        p: usize,
        gates: &[Gate],
        people: &[Candidate<'_>],
        slots: &[usize],
        owner: &mut [Option<usize>],
        seen: &mut [bool],
    ) -> bool {
        for s in 0..slots.len() {
            if seen[s] || !can_fill(&people[p], &gates[slots[s]]) {
                continue;
            }
            seen[s] = true;
            let free = match owner[s] {
                None => true,
                Some(q) => augment(q, gates, people, slots, owner, seen),
            };
            if free {
                owner[s] = Some(p);
                return true;
            }
        }
        false
    }
    let mut size = 0;
    for p in 0..people.len() {
        let mut seen = vec![false; slots.len()];
        if augment(p, gates, people, &slots, &mut slot_owner, &mut seen) {
            size += 1;
        }
    }
    let mut per_person = vec![None; people.len()];
    for (s, owner) in slot_owner.iter().enumerate() {
        if let Some(p) = owner {
            per_person[*p] = Some(slots[s]);
        }
    }
    (size, per_person)
}

pub(crate) fn total_slots(gates: &[Gate]) -> usize {
    gates.iter().map(|g| g.approvers as usize).sum()
}
