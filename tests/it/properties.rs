//! Properties that hold for every input: rule order never changes a
//! decision, the index finds exactly the rules a full scan finds, globs agree
//! with a reference fnmatch, the job hash ignores key order and sees every value.

use gavel::job::{Job, Limits};
use gavel::policy::{self, Evaluation, glob::Pattern};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

// ------------------------------------------------------------ reference fnmatch

/// Parses `[...]` starting at `p[i] == '['` the way CPython's translate does,
/// written independently of gavel's parser: returns the membership test and
/// the index after `]`, or `None` when the bracket is unclosed (a literal).
type Membership = Box<dyn Fn(char) -> bool>;

fn ref_class(p: &[char], i: usize) -> Option<(Membership, usize)> {
    let n = p.len();
    let mut j = i + 1;
    if j < n && p[j] == '!' {
        j += 1;
    }
    if j < n && p[j] == ']' {
        j += 1;
    }
    while j < n && p[j] != ']' {
        j += 1;
    }
    if j >= n {
        return None;
    }
    let stuff: Vec<char> = p[i + 1..j].to_vec();
    let (neg, body) = if stuff.first() == Some(&'!') {
        (true, stuff[1..].to_vec())
    } else {
        (false, stuff.clone())
    };
    // Split at hyphens the way CPython does, then drop reversed ranges.
    let mut chunks: Vec<Vec<char>> = Vec::new();
    let mut start = 0;
    let mut k = 1;
    loop {
        let found = (k..body.len()).find(|&x| body[x] == '-');
        match found {
            None => break,
            Some(x) => {
                chunks.push(body[start..x].to_vec());
                start = x + 1;
                k = x + 3;
            }
        }
    }
    let tail = body[start.min(body.len())..].to_vec();
    if tail.is_empty() {
        if let Some(last) = chunks.last_mut() {
            last.push('-');
        } else {
            chunks.push(vec!['-']);
        }
    } else {
        chunks.push(tail);
    }
    let mut idx = chunks.len();
    while idx > 1 {
        idx -= 1;
        let (a, b) = (chunks[idx - 1].clone(), chunks[idx].clone());
        if let (Some(&x), Some(&y)) = (a.last(), b.first())
            && x > y
        {
            let mut merged = a[..a.len() - 1].to_vec();
            merged.extend_from_slice(&b[1..]);
            chunks[idx - 1] = merged;
            chunks.remove(idx);
        }
    }
    let mut singles = Vec::new();
    let mut ranges = Vec::new();
    for (ci, c) in chunks.iter().enumerate() {
        let lo_end = if ci + 1 < chunks.len() {
            c.len().saturating_sub(1)
        } else {
            c.len()
        };
        let from = usize::from(ci > 0);
        for &ch in c.get(from..lo_end).unwrap_or(&[]) {
            singles.push(ch);
        }
        if ci + 1 < chunks.len()
            && let (Some(&lo), Some(&hi)) = (c.last(), chunks[ci + 1].first())
        {
            ranges.push((lo, hi));
        }
    }
    let empty = chunks.iter().all(Vec::is_empty);
    let test = move |ch: char| {
        if empty {
            return neg;
        }
        let inside = singles.contains(&ch) || ranges.iter().any(|&(lo, hi)| lo <= ch && ch <= hi);
        inside != neg
    };
    Some((Box::new(test), j + 1))
}

fn ref_fnmatch(p: &[char], s: &[char]) -> bool {
    if p.is_empty() {
        return s.is_empty();
    }
    match p[0] {
        '*' => (0..=s.len()).any(|k| ref_fnmatch(&p[1..], &s[k..])),
        '?' => !s.is_empty() && ref_fnmatch(&p[1..], &s[1..]),
        '[' => match ref_class(p, 0) {
            Some((test, next)) => !s.is_empty() && test(s[0]) && ref_fnmatch(&p[next..], &s[1..]),
            None => !s.is_empty() && s[0] == '[' && ref_fnmatch(&p[1..], &s[1..]),
        },
        c => !s.is_empty() && s[0] == c && ref_fnmatch(&p[1..], &s[1..]),
    }
}

fn chars(s: &str) -> Vec<char> {
    s.chars().collect()
}

fn gavel_matches(pattern: &Pattern, subject: &str) -> bool {
    let index = policy::glob::GlobIndex::build(vec![pattern.clone()]);
    let mut out = Vec::new();
    index.matches_into(subject, &mut Default::default(), &mut out);
    let by_tokens = pattern.matches(subject);
    assert_eq!(
        !out.is_empty(),
        by_tokens,
        "globset and tokens disagree on {:?} vs {subject:?}",
        pattern.as_str()
    );
    by_tokens
}

fn pattern_strategy() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            4 => proptest::sample::select(vec!['a', 'b', '.', '/', '-', '_']),
            2 => Just('*'),
            1 => Just('?'),
            1 => Just('['),
            1 => Just(']'),
            1 => proptest::sample::select(vec!['!', '^', '\\', '{', '}', ',', 'é', '\n']),
        ],
        0..8,
    )
    .prop_map(|v| v.into_iter().collect())
}

fn subject_strategy() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        proptest::sample::select(vec![
            'a', 'b', '.', '/', '-', '_', '!', '^', '[', ']', '\\', '{', '}', ',', 'é', '\n', 'z',
        ]),
        0..8,
    )
    .prop_map(|v| v.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn globs_match_like_fnmatch(p in pattern_strategy(), s in subject_strategy()) {
        match Pattern::parse(&p) {
            Ok(pattern) => prop_assert_eq!(
                gavel_matches(&pattern, &s),
                ref_fnmatch(&chars(&p), &chars(&s)),
                "pattern {:?} subject {:?}", p, s
            ),
            // Refused patterns are the ones fnmatch reads as a literal
            // bracket or a dropped range: both contain `[`.
            Err(_) => prop_assert!(p.contains('[')),
        }
    }
}

// ------------------------------------------------------------ random policies

#[derive(Debug, Clone)]
struct GenRule {
    topics: Option<Vec<&'static str>>,
    action: Option<Vec<&'static str>>,
    target: Option<Vec<&'static str>>,
    tags: Vec<&'static str>,
    tags_none: Vec<&'static str>,
    attr: Option<&'static str>,
    not_target: Option<&'static str>,
    decision: &'static str,
    approvers: u32,
    roles: &'static str,
}

const TOPICS: &[&str] = &[
    "job.*.read",
    "job.db.*",
    "job.deploy.api",
    "*",
    "job.?b.*",
    "[jk]ob.*",
];
const ACTIONS: &[&str] = &["read", "write", "del*", "deploy", "d?ploy"];
const TARGETS: &[&str] = &["prod*", "production_db", "staging-*", "*-eu", "[ps]*"];
const TAGS: &[&str] = &["prod", "write", "payment", "egress"];
const ATTRS: &[&str] = &[
    "{ cost: { gt: 100 } }",
    "{ env: \"prod*\" }",
    "{ reversible: false }",
    "{ region: { in: [eu, us] } }",
    "{ ticket: { exists: false } }",
];
const DECISIONS: &[&str] = &[
    "allow",
    "allow_with_constraints",
    "require_approval",
    "deny",
];
const ROLES: &[&str] = &["[a]", "[b]", "[a, b]"];

fn some_of(options: &'static [&'static str]) -> impl Strategy<Value = Option<Vec<&'static str>>> {
    proptest::option::of(proptest::sample::subsequence(options, 1..3))
}

fn rule_strategy() -> impl Strategy<Value = GenRule> {
    (
        some_of(TOPICS),
        some_of(ACTIONS),
        some_of(TARGETS),
        proptest::sample::subsequence(TAGS, 0..3),
        proptest::sample::subsequence(TAGS, 0..2),
        proptest::option::of(proptest::sample::select(ATTRS)),
        proptest::option::of(proptest::sample::select(TARGETS)),
        proptest::sample::select(DECISIONS),
        1u32..3,
        proptest::sample::select(ROLES),
    )
        .prop_map(
            |(
                topics,
                action,
                target,
                tags,
                tags_none,
                attr,
                not_target,
                decision,
                approvers,
                roles,
            )| GenRule {
                topics,
                action,
                target,
                tags_none: tags_none
                    .into_iter()
                    .filter(|t| !tags.contains(t))
                    .collect(),
                tags,
                attr,
                not_target,
                decision,
                approvers,
                roles,
            },
        )
}

fn yaml_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

fn policy_yaml(rules: &[(usize, GenRule)]) -> String {
    let mut y = String::from("version: v1\nrules:\n");
    for (id, r) in rules {
        y.push_str(&format!(
            "  - id: r{id}\n    decision: {}\n    match:\n",
            r.decision
        ));
        if let Some(t) = &r.topics {
            y.push_str(&format!("      topics: {}\n", yaml_list(t)));
        }
        if let Some(a) = &r.action {
            y.push_str(&format!("      action: {}\n", yaml_list(a)));
        }
        if let Some(t) = &r.target {
            y.push_str(&format!("      target: {}\n", yaml_list(t)));
        }
        y.push_str(&format!("      risk_tags: {}\n", yaml_list(&r.tags)));
        if !r.tags_none.is_empty() {
            y.push_str(&format!(
                "      risk_tags_none: {}\n",
                yaml_list(&r.tags_none)
            ));
        }
        if let Some(a) = r.attr {
            y.push_str(&format!("      attributes: {a}\n"));
        }
        if let Some(t) = r.not_target {
            y.push_str(&format!("      not: {{ target: [{t:?}] }}\n"));
        }
        match r.decision {
            "require_approval" => y.push_str(&format!(
                "    approval: {{ approvers: {}, roles: {} }}\n",
                r.approvers, r.roles
            )),
            "allow_with_constraints" => y.push_str(&format!(
                "    constraints: {{ max_runtime_sec: {}, net_allowlist: [a, b] }}\n",
                10 * r.approvers
            )),
            _ => {}
        }
    }
    y
}

fn job_strategy() -> impl Strategy<Value = Value> {
    (
        proptest::sample::select(vec!["job.db.read", "job.deploy.api", "job.ab.x", "kob.x", "other"]),
        proptest::sample::select(vec!["read", "write", "delete", "deploy", "dxploy"]),
        proptest::sample::select(vec!["production_db", "prod-eu", "staging-eu", "s3", "x"]),
        proptest::sample::subsequence(TAGS, 0..4),
        proptest::option::of(0u32..300),
        proptest::option::of(proptest::sample::select(vec!["prod-1", "dev", "eu", "us"])),
        proptest::option::of(any::<bool>()),
    )
        .prop_map(|(topic, action, target, tags, cost, env, reversible)| {
            let mut attrs = Map::new();
            if let Some(c) = cost {
                attrs.insert("cost".into(), json!(c));
            }
            if let Some(e) = env {
                attrs.insert("env".into(), json!(e));
                attrs.insert("region".into(), json!(e));
            }
            if let Some(r) = reversible {
                attrs.insert("reversible".into(), json!(r));
                attrs.insert("ticket".into(), json!("T-1"));
            }
            json!({"topic": topic, "action": action, "target": target, "risk_tags": tags, "attributes": attrs})
        })
}

/// What must not depend on rule order.
type OrderFree = (String, BTreeSet<String>, BTreeSet<(u32, Vec<String>)>, bool);

fn order_free(e: &Evaluation) -> OrderFree {
    (
        e.decision.to_string(),
        e.matched_rules.iter().cloned().collect(),
        e.gates
            .iter()
            .map(|g| (g.approvers, g.roles.clone()))
            .collect(),
        e.overridable,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn rule_order_never_changes_the_decision(
        rules in proptest::collection::vec(rule_strategy(), 1..12),
        jobs in proptest::collection::vec(job_strategy(), 1..8),
        seed in any::<u64>(),
    ) {
        let numbered: Vec<(usize, GenRule)> = rules.into_iter().enumerate().collect();
        let mut shuffled = numbered.clone();
        // A seeded Fisher-Yates shuffle keeps failures reproducible.
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let a = policy::load(&policy_yaml(&numbered), "a.yaml").map_err(|e| TestCaseError::fail(format!("{:#?}", e.findings)))?.snapshot;
        let b = policy::load(&policy_yaml(&shuffled), "b.yaml").map_err(|e| TestCaseError::fail(format!("{:#?}", e.findings)))?.snapshot;
        for j in jobs {
            let job = Job::from_json_value(j, &Limits::default()).unwrap();
            let ea = a.policy.evaluate(&job, None);
            let eb = b.policy.evaluate(&job, None);
            prop_assert_eq!(order_free(&ea), order_free(&eb));
            // The index must find exactly what a full scan finds.
            prop_assert_eq!(&a.policy.explain(&job, None).evaluation, &ea);
            prop_assert_eq!(&b.policy.explain(&job, None).evaluation, &eb);
        }
    }
}

// ------------------------------------------------------------ job hash

fn shuffled_object(map: &Map<String, Value>, seed: u64) -> String {
    // Serialise keys in a seed-dependent order, recursively.
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort_by_key(|k| {
        let mut h = seed ^ 0x9e3779b97f4a7c15;
        for b in k.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
        }
        h
    });
    let parts: Vec<String> = keys
        .into_iter()
        .map(|k| {
            let v = match &map[k] {
                Value::Object(inner) => shuffled_object(inner, seed.rotate_left(7)),
                other => other.to_string(),
            };
            format!("{}: {v}", serde_json::to_string(k).unwrap())
        })
        .collect();
    format!("{{ {} }}", parts.join(", "))
}

fn job_value_strategy() -> impl Strategy<Value = Map<String, Value>> {
    let scalar = prop_oneof![
        any::<bool>().prop_map(Value::from),
        (-1_000_000i64..1_000_000).prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "[a-zé€😀 ]{0,6}".prop_map(Value::from),
    ];
    let params = proptest::collection::btree_map("[a-z]{1,4}", scalar.clone(), 0..5);
    let attrs = proptest::collection::btree_map("[a-z]{1,4}", scalar, 0..5);
    (
        "[a-z.]{0,10}",
        "[a-z]{0,6}",
        "[a-z_]{0,8}",
        proptest::collection::vec("[a-z]{1,5}", 0..5),
        attrs,
        params,
        proptest::option::of("[A-Za-z ]{0,8}"),
    )
        .prop_map(|(topic, action, target, tags, attrs, params, title)| {
            let mut m = Map::new();
            m.insert("topic".into(), json!(topic));
            m.insert("action".into(), json!(action));
            m.insert("target".into(), json!(target));
            m.insert("risk_tags".into(), json!(tags));
            m.insert(
                "attributes".into(),
                Value::Object(attrs.into_iter().collect()),
            );
            m.insert(
                "params".into(),
                json!({ "nested": params, "list": [1, "two", 3.5] }),
            );
            if let Some(t) = title {
                m.insert("proposal".into(), json!({ "title": t, "reversible": true }));
            }
            m
        })
}

fn hash_of(text: &str) -> String {
    Job::from_json(text.as_bytes(), &Limits::default())
        .unwrap_or_else(|e| panic!("{e}: {text}"))
        .hash()
        .to_string()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn job_hash_ignores_key_order_and_tag_order(m in job_value_strategy(), seed in any::<u64>()) {
        let plain = hash_of(&Value::Object(m.clone()).to_string());
        let reordered = hash_of(&shuffled_object(&m, seed));
        prop_assert_eq!(&plain, &reordered);
        let mut tags_reversed = m.clone();
        if let Some(Value::Array(tags)) = tags_reversed.get_mut("risk_tags") {
            tags.reverse();
            let dup = tags.first().cloned();
            tags.extend(dup);
        }
        prop_assert_eq!(&plain, &hash_of(&Value::Object(tags_reversed).to_string()));
        // job_id is not part of the hash.
        let mut with_id = m.clone();
        with_id.insert("job_id".into(), json!(format!("id-{seed}")));
        prop_assert_eq!(&plain, &hash_of(&Value::Object(with_id).to_string()));
    }

    #[test]
    fn job_hash_changes_with_any_value(m in job_value_strategy(), which in 0usize..6) {
        let before = hash_of(&Value::Object(m.clone()).to_string());
        let mut changed = m.clone();
        match which {
            0 => { changed.insert("topic".into(), json!(format!("{}x", m["topic"].as_str().unwrap()))); }
            1 => { changed.insert("target".into(), json!(format!("{}!", m["target"].as_str().unwrap()))); }
            2 => {
                let mut tags: Vec<Value> = m["risk_tags"].as_array().unwrap().clone();
                tags.push(json!("zz-new-tag"));
                changed.insert("risk_tags".into(), json!(tags));
            }
            3 => { changed["params"]["list"][0] = json!(2); }
            4 => { changed.insert("tenant".into(), json!("acme")); }
            _ => { changed["params"]["nested"]["zzzz"] = json!(null); }
        }
        prop_assert_ne!(before, hash_of(&Value::Object(changed).to_string()));
    }
}

// ------------------------------------------------------------ no panics

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    /// Any text, policy-shaped or not, gives findings or a snapshot: never a
    /// panic, and every error is located.
    #[test]
    fn any_policy_text_is_handled(
        text in prop_oneof![
            ".{0,200}",
            proptest::collection::vec(
                proptest::sample::select(vec![
                    "version: v1\n", "rules:\n", "  - id: a\n", "    match: {", "}\n", "topics: [", "]", "\"*\"",
                    "    decision: ", "deny", "allow", "require_approval", "\n", "&a ", "*a", "!!str ", "- ", ": ",
                    "not: ", "attributes: {x: {gt: ", "1e400", "}}", "[z-a]", "approval: {approvers: ", "-1", "{{",
                ]),
                0..40,
            ).prop_map(|parts| parts.concat()),
        ]
    ) {
        match policy::load(&text, "fuzz.yaml") {
            Ok(_) => {}
            Err(e) => {
                prop_assert!(!e.findings.is_empty());
                for f in &e.findings {
                    prop_assert!(f.line >= 1 && f.column >= 1, "{}", f);
                }
            }
        }
    }

    /// Any bytes as a job give a job or a refusal naming a field.
    #[test]
    fn any_job_bytes_are_handled(bytes in proptest::collection::vec(any::<u8>(), 0..200), text in "\\{.{0,120}\\}") {
        for input in [bytes.as_slice(), text.as_bytes()] {
            if let Err(e) = Job::from_json(input, &Limits::default()) {
                prop_assert!(e.field.starts_with("job"), "{}", e);
            }
        }
    }
}
