//! Generated policies for benchmarks and load tests: `rules` rules in a
//! realistic mix (topic, action and target globs, risk tags, attribute
//! tests; every decision), most of which do not match any given job.
//! Deterministic for a given seed. Pure.

use std::fmt::Write;

const VERBS: [&str; 16] = [
    "read", "list", "get", "write", "update", "create", "delete", "deploy", "migrate", "rotate",
    "grant", "revoke", "scale", "restart", "pay", "refund",
];
const TAGS: [&str; 12] = [
    "prod",
    "write",
    "payment",
    "egress",
    "pii",
    "access-grant",
    "destructive",
    "staging",
    "customer",
    "finance",
    "security",
    "batch",
];

/// A small deterministic generator (xorshift), so output is stable across
/// platforms and crate versions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The YAML of a generated policy with `rules` rules.
pub fn policy_yaml(rules: usize, seed: u64) -> String {
    let mut y = String::with_capacity(rules * 220);
    let _ = writeln!(
        y,
        "version: v1\nname: generated-{rules}\ndefaults:\n  decision: require_approval\n  approval: {{ approvers: 1, roles: [reviewer] }}\nrules:"
    );
    y.push_str(&rules_yaml(rules, seed));
    y
}

/// A base policy whose last top-level key is `rules:`, followed by `rules`
/// generated rules (ids `gen-N`): the base's decisions stay as they were
/// for jobs the generated rules do not touch.
pub fn extend_policy(base: &str, rules: usize, seed: u64) -> String {
    let mut y = base.trim_end().to_owned();
    y.push('\n');
    y.push_str(&rules_yaml(rules, seed).replace("  - id: rule-", "  - id: gen-"));
    y
}

/// `rules` generated rule items (YAML list entries under `rules:`).
pub fn rules_yaml(rules: usize, seed: u64) -> String {
    let mut rng = Rng(seed | 1);
    let mut y = String::with_capacity(rules * 220);
    for i in 0..rules {
        let svc = i % 997;
        let verb = VERBS[rng.below(VERBS.len() as u64) as usize];
        let _ = writeln!(y, "  - id: rule-{i}\n    match:");
        // Topic: mostly one service, sometimes a verb across services.
        match rng.below(10) {
            0 => {
                let _ = writeln!(y, "      topics: [\"job.*.{verb}-{svc}\"]");
            }
            1..=3 => {
                let _ = writeln!(y, "      topics: [\"job.svc{svc}.*\"]");
            }
            _ => {
                let _ = writeln!(
                    y,
                    "      topics: [\"job.svc{svc}.{verb}\", \"job.svc{svc}.{verb}.*\"]"
                );
            }
        }
        if rng.below(3) > 0 {
            let _ = writeln!(y, "      action: [{verb}]");
        }
        match rng.below(4) {
            0 => {
                let _ = writeln!(y, "      target: [\"res-{i}-*\"]");
            }
            1 => {
                let _ = writeln!(y, "      target: [\"res-{i}\", \"res-{i}.?\"]");
            }
            _ => {}
        }
        let ntags = rng.below(3);
        if ntags > 0 {
            let mut tags: Vec<&str> = (0..ntags)
                .map(|_| TAGS[rng.below(TAGS.len() as u64) as usize])
                .collect();
            tags.sort_unstable();
            tags.dedup();
            let _ = writeln!(y, "      risk_tags: [{}]", tags.join(", "));
        }
        match rng.below(6) {
            0 => {
                let _ = writeln!(
                    y,
                    "      attributes: {{ estimated_cost_usd: {{ gt: {} }} }}",
                    100 * (1 + rng.below(50))
                );
            }
            1 => {
                let _ = writeln!(y, "      attributes: {{ env: \"prod-*\" }}");
            }
            2 => {
                let _ = writeln!(
                    y,
                    "      attributes: {{ scope: {{ in: [directory, repository] }} }}"
                );
            }
            _ => {}
        }
        match rng.below(20) {
            0..=7 => {
                let _ = writeln!(y, "    decision: allow");
            }
            8..=10 => {
                let _ = writeln!(
                    y,
                    "    decision: allow_with_constraints\n    constraints: {{ max_runtime_sec: {}, network_allowlist: [api.github.com, svc{svc}.internal] }}",
                    30 + rng.below(300)
                );
            }
            11..=17 => {
                let _ = writeln!(
                    y,
                    "    decision: require_approval\n    reason: \"Service {svc} {verb} needs review\"\n    approval: {{ approvers: {}, roles: [team-{}, oncall] }}",
                    1 + rng.below(2),
                    svc % 31
                );
            }
            _ => {
                let _ = writeln!(
                    y,
                    "    decision: deny\n    reason: \"Never {verb} service {svc} automatically\""
                );
            }
        }
    }
    y
}

/// A job as JSON that looks like the generated policy's traffic: it hits a
/// handful of rules of service `n % 997`.
pub fn job_json(n: usize) -> String {
    let svc = n % 997;
    let verb = VERBS[n % VERBS.len()];
    format!(
        r#"{{"job_id":"bench-{n}","topic":"job.svc{svc}.{verb}","action":"{verb}","target":"res-{n}-eu","risk_tags":["prod","write"],"attributes":{{"estimated_cost_usd":{},"env":"prod-eu","scope":"directory"}},"params":{{"n":{n}}}}}"#,
        (n * 37) % 5000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_policies_load_and_are_deterministic() {
        let a = policy_yaml(300, 7);
        assert_eq!(a, policy_yaml(300, 7));
        assert_ne!(a, policy_yaml(300, 8));
        let loaded = crate::policy::load(&a, "generated.yaml").unwrap();
        assert_eq!(loaded.snapshot.policy.rules().len(), 300);
        let job = crate::job::Job::from_json(job_json(5).as_bytes(), &Default::default()).unwrap();
        let e = loaded.snapshot.policy.evaluate(&job, None);
        assert!(
            e.matched_rules.len() < 30,
            "most rules do not match: {}",
            e.matched_rules.len()
        );
    }
}
