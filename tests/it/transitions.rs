//! The pure state machine: every command in every state, with the effects
//! each transition asks the store to write; and the slot matching, against
//! a brute-force oracle over random gates, roles and approval orders.

use gavel::approval::{
    self, ApproveInput, BindInput, Command, Effect, JobRecord, JobState, NewJob, NotificationKind,
    Transition,
};
use gavel::audit::EventKind;
use gavel::identity::Identity;
use gavel::job::{Job, JobHash};
use gavel::policy::{Channel, Gate};
use proptest::prelude::*;
use std::collections::BTreeSet;

const T0: i64 = 1_000_000_000;
const MIN: i64 = 60_000;

fn person(name: &str, roles: &[&str]) -> Identity {
    Identity {
        name: name.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        acts_for: BTreeSet::new(),
        tenants: Default::default(),
    }
}

/// A job decided at T0 under the test policy: `read` is allowed, `deploy`
/// needs two reviewers (SLA 5m, timeout 10m, bind within 5m), `migrate`
/// is an overridable deny.
fn decided(action: &str) -> JobRecord {
    let snapshot = super::load(super::helpers::POLICY);
    let job = Job::from_json(
        format!(r#"{{"job_id":"j-{action}","action":"{action}","topic":"t"}}"#).as_bytes(),
        &Default::default(),
    )
    .unwrap();
    approval::decided(
        NewJob {
            job_id: format!("j-{action}"),
            job_hash: job.hash(),
            canonical_job: job.canonical_json(),
            tenant: String::new(),
            requester: "agent-1".into(),
            snapshot_id: snapshot.id.clone(),
            decision_id: "d".into(),
            evaluation: snapshot.policy.evaluate(&job, Some("agent-1")),
            default_bind_within_secs: 300,
        },
        T0,
    )
    .record
}

fn step(r: &JobRecord, c: Command, at: i64) -> JobRecord {
    approval::apply(r, &c, at)
        .unwrap_or_else(|e| panic!("{:?} on {:?}: {}", c.kind(), r.state, e.refusal))
        .record
}

fn approve_by(who: &str) -> Command {
    Command::Approve(ApproveInput {
        by: person(who, &["reviewer"]),
        reason: "looks right".into(),
        note: String::new(),
        channel: Channel::Grpc,
        expected_job_hash: None,
        expected_snapshot: None,
    })
}

fn bind_of(r: &JobRecord) -> Command {
    Command::Bind(BindInput {
        by: person("executor", &["executor"]),
        job_hash: r.job_hash.clone(),
        snapshot_id: r.snapshot_id.to_string(),
        snapshot_revoked: false,
        require_active: None,
        bind_id: "b-1".into(),
    })
}

fn report(succeeded: bool) -> Command {
    Command::Report {
        by: person("executor", &["executor"]),
        bind_id: "b-1".into(),
        succeeded,
        detail: String::new(),
    }
}

fn override_by(who: &str) -> Command {
    Command::Override {
        by: person(who, &["breakglass"]),
        reason: "incident".into(),
        note: String::new(),
        default_bind_within_secs: 300,
    }
}

/// A record in each state, reached by the commands that lead there.
fn in_state(state: &str) -> JobRecord {
    let pending = || decided("deploy");
    match state {
        "allowed" => decided("read"),
        "denied" => decided("migrate"),
        "pending" => pending(),
        "approved" => step(
            &step(&pending(), approve_by("alice"), T0),
            approve_by("bob"),
            T0,
        ),
        "overridden" => step(&pending(), override_by("eve"), T0),
        "rejected" => step(
            &pending(),
            Command::Reject {
                by: person("alice", &["reviewer"]),
                reason: "no".into(),
                note: String::new(),
            },
            T0,
        ),
        "expired" => step(&pending(), Command::Expire, T0 + 11 * MIN),
        "cancelled" => step(
            &pending(),
            Command::Cancel {
                by: person("agent-1", &["agent"]),
                reason: "not needed".into(),
            },
            T0,
        ),
        "bound" => step(&decided("read"), bind_of(&decided("read")), T0),
        "succeeded" => step(&in_state("bound"), report(true), T0),
        "failed" => step(&in_state("bound"), report(false), T0),
        other => panic!("no state {other}"),
    }
}

/// Each command as the right person would send it, and when: one minute
/// after T0, except the sweeper's, which come after the SLA (escalate) or
/// after every deadline (expire).
fn commands(r: &JobRecord) -> Vec<(&'static str, Command, i64)> {
    vec![
        ("approve", approve_by("carol"), T0 + MIN),
        (
            "reject",
            Command::Reject {
                by: person("carol", &["reviewer"]),
                reason: "no".into(),
                note: String::new(),
            },
            T0 + MIN,
        ),
        (
            "cancel",
            Command::Cancel {
                by: person("agent-1", &["agent"]),
                reason: String::new(),
            },
            T0 + MIN,
        ),
        ("override", override_by("frank"), T0 + MIN),
        (
            "acknowledge",
            Command::Acknowledge {
                by: person("carol", &["reviewer"]),
                note: String::new(),
            },
            T0 + MIN,
        ),
        ("bind", bind_of(r), T0 + MIN),
        ("report", report(true), T0 + MIN),
        ("expire", Command::Expire, T0 + 11 * MIN),
        ("escalate", Command::Escalate, T0 + 6 * MIN),
    ]
}

/// What each command does in each state: the next state, or the refusal.
/// Written from SPEC §4 and §5, not from the code.
#[rustfmt::skip]
const MATRIX: &[(&str, [&str; 9])] = &[
    // state         approve       reject        cancel        override      acknowledge       bind            report      expire        escalate
    ("allowed",     ["NOT_PENDING","NOT_PENDING","NOT_PENDING","NOT_PENDING","NOT_OVERRIDABLE","bound",        "NOT_BOUND","expired",    "NOT_PENDING"]),
    ("denied",      ["NOT_PENDING","NOT_PENDING","NOT_PENDING","approved",   "NOT_OVERRIDABLE","DENIED",       "NOT_BOUND","NOT_PENDING","NOT_PENDING"]),
    ("pending",     ["pending",    "rejected",   "cancelled",  "approved",   "NOT_OVERRIDABLE","PENDING",      "NOT_BOUND","expired",    "pending"]),
    ("approved",    ["NOT_PENDING","NOT_PENDING","NOT_PENDING","NOT_PENDING","NOT_OVERRIDABLE","bound",        "NOT_BOUND","expired",    "NOT_PENDING"]),
    ("overridden",  ["NOT_PENDING","NOT_PENDING","NOT_PENDING","NOT_PENDING","approved",       "bound",        "NOT_BOUND","expired",    "NOT_PENDING"]),
    ("rejected",    ["NOT_PENDING","NOT_PENDING","NOT_PENDING","NOT_PENDING","NOT_OVERRIDABLE","REJECTED",     "NOT_BOUND","NOT_PENDING","NOT_PENDING"]),
    ("expired",     ["EXPIRED",    "EXPIRED",    "EXPIRED",    "EXPIRED",    "NOT_OVERRIDABLE","EXPIRED",      "NOT_BOUND","NOT_PENDING","NOT_PENDING"]),
    ("cancelled",   ["NOT_PENDING","NOT_PENDING","NOT_PENDING","NOT_PENDING","NOT_OVERRIDABLE","CANCELLED",    "NOT_BOUND","NOT_PENDING","NOT_PENDING"]),
    ("bound",       ["NOT_PENDING","NOT_PENDING","NOT_PENDING","NOT_PENDING","NOT_OVERRIDABLE","ALREADY_BOUND","succeeded","NOT_PENDING","NOT_PENDING"]),
    ("succeeded",   ["NOT_PENDING","NOT_PENDING","NOT_PENDING","NOT_PENDING","NOT_OVERRIDABLE","ALREADY_BOUND","NOT_BOUND","NOT_PENDING","NOT_PENDING"]),
    ("failed",      ["NOT_PENDING","NOT_PENDING","NOT_PENDING","NOT_PENDING","NOT_OVERRIDABLE","ALREADY_BOUND","NOT_BOUND","NOT_PENDING","NOT_PENDING"]),
];

/// The notification a successful command sends from a state, if any.
fn notification(state: &str, command: &str) -> Option<NotificationKind> {
    match (state, command) {
        (_, "override") => Some(NotificationKind::Overridden),
        ("pending", "reject" | "cancel") => Some(NotificationKind::Resolved),
        ("pending", "expire") => Some(NotificationKind::Expired),
        ("approved" | "overridden", "expire") => Some(NotificationKind::Expired),
        ("pending", "escalate") => Some(NotificationKind::Escalated),
        // One approval of two: nothing resolved yet.
        _ => None,
    }
}

fn kinds(t: &[Effect]) -> (Vec<EventKind>, Vec<NotificationKind>) {
    let mut audit = Vec::new();
    let mut notify = Vec::new();
    for e in t {
        match e {
            Effect::Audit(a) => audit.push(a.kind),
            Effect::Notify(n) => notify.push(n.kind),
        }
    }
    (audit, notify)
}

#[test]
fn every_command_in_every_state() {
    for (state, expected) in MATRIX {
        let r = in_state(state);
        let effective = r.effective_state(T0 + MIN);
        for ((name, command, at), want) in commands(&r).into_iter().zip(expected) {
            let kind = command.kind();
            let got = match approval::apply(&r, &command, at) {
                Ok(Transition { record, effects }) => {
                    assert_eq!(record.version, r.version + 1, "{state} × {name}");
                    assert_eq!(record.updated_at, at, "{state} × {name}");
                    let (audit, notify) = kinds(&effects);
                    assert_eq!(
                        audit,
                        [kind],
                        "{state} × {name}: one audit event of its kind"
                    );
                    assert_eq!(
                        notify,
                        notification(state, name).into_iter().collect::<Vec<_>>(),
                        "{state} × {name}: notifications"
                    );
                    for e in &effects {
                        if let Effect::Notify(n) = e {
                            assert_eq!(n.job_version, record.version);
                            assert_eq!(
                                n.key(),
                                format!("{}:{}:{}", r.job_id, record.version, n.kind.as_str())
                            );
                        }
                    }
                    record.state.as_str().to_owned()
                }
                Err(refused) => {
                    // Only refused binds leave a trace.
                    let (audit, notify) = kinds(&refused.effects);
                    let want_audit: &[EventKind] = if name == "bind" {
                        &[EventKind::BindRefused]
                    } else {
                        &[]
                    };
                    assert_eq!(audit, want_audit, "{state} × {name}: refusal effects");
                    assert!(notify.is_empty());
                    refused.refusal.reason.as_str().to_owned()
                }
            };
            assert_eq!(
                &got,
                want,
                "{state} (effective {}) × {name}",
                effective.as_str()
            );
        }
    }
}

#[test]
fn the_second_approval_resolves_and_notifies_once() {
    let one = step(&decided("deploy"), approve_by("alice"), T0);
    let t = approval::apply(&one, &approve_by("bob"), T0 + MIN).unwrap();
    assert_eq!(t.record.state, JobState::Approved);
    assert_eq!(
        t.record.expires_at,
        Some(T0 + MIN + 5 * MIN),
        "bind within 5m"
    );
    assert_eq!(kinds(&t.effects).1, [NotificationKind::Resolved]);
    let approvers: Vec<&str> = t
        .record
        .approvals
        .iter()
        .map(|a| a.approver.as_str())
        .collect();
    assert_eq!(approvers, ["alice", "bob"]);
}

#[test]
fn a_decision_notifies_only_when_it_waits_for_people() {
    for (action, notify) in [
        ("read", vec![]),
        ("migrate", vec![]),
        ("deploy", vec![NotificationKind::Pending]),
    ] {
        let snapshot = super::load(super::helpers::POLICY);
        let job = Job::from_json(
            format!(r#"{{"action":"{action}","topic":"t"}}"#).as_bytes(),
            &Default::default(),
        )
        .unwrap();
        let t = approval::decided(
            NewJob {
                job_id: "j".into(),
                job_hash: job.hash(),
                canonical_job: job.canonical_json(),
                tenant: "team-a".into(),
                requester: "agent-1".into(),
                snapshot_id: snapshot.id.clone(),
                decision_id: "d".into(),
                evaluation: snapshot.policy.evaluate(&job, None),
                default_bind_within_secs: 300,
            },
            T0,
        );
        let (audit, notified) = kinds(&t.effects);
        assert_eq!(audit, [EventKind::Decision], "{action}");
        assert_eq!(notified, notify, "{action}");
        if let Some(Effect::Notify(n)) = t.effects.get(1) {
            assert_eq!((n.tenant.as_str(), n.job_version), ("team-a", 1));
            assert_eq!(n.body["state"], "pending");
        }
    }
}

#[test]
fn a_refused_bind_of_a_missing_job_is_audited_and_nothing_else_is() {
    let r = decided("read");
    let effects = approval::missing("nope", &bind_of(&r));
    let [Effect::Audit(e)] = effects.as_slice() else {
        panic!("{effects:?}");
    };
    assert_eq!(e.kind, EventKind::BindRefused);
    assert_eq!(e.job_id, "nope");
    assert_eq!(e.body.to_value().unwrap()["reason"], "NOT_FOUND");
    assert_eq!(
        e.body.to_value().unwrap()["presented_job_hash"],
        r.job_hash.as_str()
    );
    assert!(approval::missing("nope", &Command::Expire).is_empty());
    assert!(approval::missing("nope", &approve_by("alice")).is_empty());
}

#[test]
fn an_overrider_never_acknowledges_their_own_override() {
    let r = in_state("overridden");
    let own = Command::Acknowledge {
        by: person("eve", &["breakglass"]),
        note: String::new(),
    };
    let refused = approval::apply(&r, &own, T0 + MIN).unwrap_err();
    assert_eq!(refused.refusal.reason.as_str(), "SELF_ACKNOWLEDGE");
}

// ------------------------------------------------------------ slots

const ROLES: [&str; 4] = ["r0", "r1", "r2", "r3"];

fn gate_strategy() -> impl Strategy<Value = Gate> {
    (
        1u32..=3,
        proptest::sample::subsequence(ROLES.to_vec(), 1..=3),
        proptest::sample::subsequence(Channel::ALL.to_vec(), 0..=2),
    )
        .prop_map(|(approvers, roles, channels)| Gate {
            approvers,
            roles: roles.into_iter().map(str::to_owned).collect(),
            rules: vec!["r".into()],
            sla_seconds: 300,
            timeout_seconds: 600,
            bind_within_seconds: 300,
            channels,
            escalate: vec![],
        })
}

fn people_strategy() -> impl Strategy<Value = Vec<Vec<&'static str>>> {
    proptest::collection::vec(proptest::sample::subsequence(ROLES.to_vec(), 0..=3), 1..=6)
}

/// Whether people (roles, channel) can all sit in distinct slots: brute
/// force, independent of the matching under test.
fn all_seated(gates: &[Gate], people: &[(Vec<&str>, Channel)]) -> bool {
    fn seat(gates: &[Gate], people: &[(Vec<&str>, Channel)], free: &mut [u32]) -> bool {
        let Some(((roles, channel), rest)) = people.split_first() else {
            return true;
        };
        for g in 0..gates.len() {
            let fits = free[g] > 0
                && (gates[g].channels.is_empty() || gates[g].channels.contains(channel))
                && roles.iter().any(|r| gates[g].roles.iter().any(|x| x == r));
            if fits {
                free[g] -= 1;
                let ok = seat(gates, rest, free);
                free[g] += 1;
                if ok {
                    return true;
                }
            }
        }
        false
    }
    let mut free: Vec<u32> = gates.iter().map(|g| g.approvers).collect();
    seat(gates, people, &mut free)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// One person never fills two slots; an approval is accepted exactly
    /// when everyone who approved (and the newcomer) can still sit in
    /// distinct slots of gates they qualify for; the job is approved
    /// exactly when every slot is filled.
    #[test]
    fn one_person_never_fills_two_slots(
        gates in proptest::collection::vec(gate_strategy(), 1..=3),
        people in people_strategy(),
        attempts in proptest::collection::vec((0usize..6, proptest::sample::select(Channel::ALL.to_vec())), 0..16),
    ) {
        let mut r = decided("deploy");
        r.evaluation.gates = gates.clone();
        let slots: u32 = gates.iter().map(|g| g.approvers).sum();
        let mut seated: Vec<(Vec<&str>, Channel)> = Vec::new();
        for (i, channel) in attempts {
            let Some(roles) = people.get(i % people.len()) else { continue };
            let name = format!("p{}", i % people.len());
            let who = Identity {
                name: name.clone(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                acts_for: BTreeSet::new(),
                tenants: Default::default(),
            };
            let command = Command::Approve(ApproveInput {
                by: who,
                reason: "ok".into(),
                note: String::new(),
                channel,
                expected_job_hash: None,
                expected_snapshot: None,
            });
            let already = r.approvals.iter().any(|a| a.approver == name);
            let pending = r.state == JobState::Pending;
            let mut with_me = seated.clone();
            with_me.push((roles.clone(), channel));
            match approval::apply(&r, &command, T0 + MIN) {
                Ok(t) => {
                    prop_assert!(pending && !already);
                    prop_assert!(all_seated(&gates, &with_me), "accepted but cannot be seated");
                    seated = with_me;
                    r = t.record;
                }
                Err(refused) => {
                    let why = refused.refusal.reason.as_str();
                    if !pending {
                        prop_assert_eq!(why, "NOT_PENDING");
                    } else if already {
                        prop_assert_eq!(why, "ALREADY_APPROVED");
                    } else {
                        prop_assert!(!all_seated(&gates, &with_me), "refused ({}) but could be seated", why);
                    }
                }
            }
            // Names are distinct, each approval fills exactly one slot of
            // a gate it qualifies for, and no gate is over-filled.
            let names: BTreeSet<&str> = r.approvals.iter().map(|a| a.approver.as_str()).collect();
            prop_assert_eq!(names.len(), r.approvals.len());
            let assignment = r.assignment();
            let mut filled = vec![0u32; gates.len()];
            for (a, g) in r.approvals.iter().zip(&assignment) {
                let g = g.expect("every accepted approval fills a slot");
                let gate = &gates[g];
                prop_assert!(a.roles.iter().any(|x| gate.roles.contains(x)));
                prop_assert!(gate.channels.is_empty() || gate.channels.contains(&a.channel));
                filled[g] += 1;
            }
            for (f, g) in filled.iter().zip(&gates) {
                prop_assert!(*f <= g.approvers);
            }
            prop_assert_eq!(r.filled(), filled);
            let total: u32 = r.approvals.len() as u32;
            prop_assert_eq!(r.state == JobState::Approved, total == slots);
        }
    }
}

#[test]
fn job_hashes_compare_exactly() {
    let h = JobHash::parse(&"AB".repeat(32)).unwrap();
    assert_eq!(h, JobHash::parse(&"ab".repeat(32)).unwrap());
    assert_eq!(h.as_str(), "ab".repeat(32));
}

/// The `decision` event's body as SPEC §10 lists it, built the plain way
/// and canonicalised by the reference implementation.
fn plain_decision_body(r: &JobRecord) -> String {
    let e = &r.evaluation;
    serde_json_canonicalizer::to_string(&serde_json::json!({
        "decision_id": r.decision_id,
        "job_hash": r.job_hash.as_str(),
        "decision": e.decision.as_str(),
        "primary_rule": e.primary_rule,
        "matched_rules": e.matched_rules,
        "reason": e.reason,
        "gates": e.gates,
        "constraints": e.constraints,
        "state": r.state.as_str(),
        "expires_at": r.expires_at,
        "canonical_job": r.canonical_job,
    }))
    .unwrap()
}

/// The body text of the `decision` event a freshly decided record asks for.
fn decision_body_text(t: &Transition) -> String {
    match t.effects.first() {
        Some(Effect::Audit(e)) if e.kind == EventKind::Decision => e.body.clone().into_jcs(),
        other => panic!("no decision event first: {other:?}"),
    }
}

/// Redecides `r` as a fresh job with the same fields.
fn redecide(r: &JobRecord, default_bind_within_secs: u64) -> Transition {
    approval::decided(
        NewJob {
            job_id: r.job_id.clone(),
            job_hash: r.job_hash.clone(),
            canonical_job: r.canonical_job.clone(),
            tenant: r.tenant.clone(),
            requester: r.requester.clone(),
            snapshot_id: r.snapshot_id.clone(),
            decision_id: r.decision_id.clone(),
            evaluation: r.evaluation.clone(),
            default_bind_within_secs,
        },
        T0,
    )
}

#[test]
fn the_decision_body_is_the_plain_construction_for_every_decision() {
    for action in ["read", "deploy", "migrate"] {
        let t = redecide(&decided(action), 300);
        assert_eq!(
            decision_body_text(&t),
            plain_decision_body(&t.record),
            "{action}"
        );
    }
    // Constraints, and a deny without a deadline.
    let mut r = decided("read");
    r.evaluation.decision = gavel::policy::Decision::AllowWithConstraints;
    r.evaluation.constraints = [("max_runtime_sec".to_owned(), serde_json::json!(60))].into();
    let t = redecide(&r, 300);
    assert_eq!(decision_body_text(&t), plain_decision_body(&t.record));
    assert!(decision_body_text(&t).contains(r#""constraints":{"max_runtime_sec":60}"#));
    let t = redecide(&decided("migrate"), 300);
    assert_eq!(t.record.expires_at, None);
    assert!(decision_body_text(&t).contains(r#""expires_at":null"#));
}

fn text_strategy() -> impl Strategy<Value = String> {
    // Quotes, escapes, control characters, characters beyond the BMP and
    // at or above U+E000 (where UTF-16 and UTF-8 order differ).
    proptest::collection::vec(
        prop_oneof![
            proptest::char::range('\0', '\u{7f}'),
            Just('\u{e9}'),
            Just('\u{e000}'),
            Just('\u{ffff}'),
            Just('\u{1f600}'),
        ],
        0..12,
    )
    .prop_map(|c| c.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// Written straight to text, the decision body is still byte for byte
    /// the RFC 8785 form of the object SPEC §10 lists, whatever the job,
    /// rules, reason, gates and constraints hold.
    #[test]
    fn the_decision_body_is_canonical_whatever_it_holds(
        canonical_job in text_strategy(),
        reason in text_strategy(),
        rules in proptest::collection::vec(text_strategy(), 0..4),
        gates in proptest::collection::vec(gate_strategy(), 0..3),
        constraints in proptest::collection::btree_map(
            text_strategy(),
            prop_oneof![
                any::<i64>().prop_map(serde_json::Value::from),
                any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
                text_strategy().prop_map(serde_json::Value::from),
                Just(serde_json::Value::Null),
            ],
            0..4,
        ),
        action in proptest::sample::select(vec!["read", "deploy", "migrate"]),
        bind_within in any::<u64>(),
    ) {
        let mut r = decided(action);
        r.canonical_job = canonical_job;
        r.evaluation.reason = reason;
        r.evaluation.matched_rules = rules;
        r.evaluation.gates = gates;
        r.evaluation.constraints = constraints;
        let t = redecide(&r, bind_within);
        prop_assert_eq!(decision_body_text(&t), plain_decision_body(&t.record));
    }
}
