//! `gavel mcp-proxy`: the pure part. An MCP `tools/call` becomes a job
//! (topic `mcp.<server>.<tool>`, action the tool's name, params the
//! arguments exactly), its job id is derived from its content, and every
//! outcome that is not "bound" has a fixed tool-error text. The shell
//! (`cli::mcp_proxy`) speaks MCP on both sides and asks gavel.

use crate::policy::glob::Pattern;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// A mapping file that cannot be used, a call it cannot map, or a server
/// name that cannot name a topic (the same error as the hook's mapping).
pub use crate::hook::MapError;

/// One rule of the mapping file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    /// A glob over the tool name.
    #[serde(rename = "match")]
    pattern: String,
    /// The argument whose (string) value becomes the job's target.
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    risk_tags: Vec<String>,
    /// Fixed attributes added to the job (string, number or bool values).
    #[serde(default)]
    attributes: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    /// The tenant every job is decided for.
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    tools: Vec<RawRule>,
}

#[derive(Clone, Debug)]
struct Rule {
    pattern: Pattern,
    raw: RawRule,
}

/// How the tool calls of one upstream server become jobs.
#[derive(Clone, Debug)]
pub struct Mapping {
    server: String,
    tenant: String,
    rules: Vec<Rule>,
}

/// The attributes every job carries; a mapping file cannot set them.
const RESERVED: &[&str] = &["agent", "mcp_server", "mcp_tool"];

/// Checks a server name: it becomes one segment of a dotted topic.
pub fn check_server_name(name: &str) -> Result<(), MapError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(MapError(format!(
            "--name `{name}`: use 1 to 64 letters, digits, `-` or `_` (it becomes the topic segment in mcp.<name>.<tool>)"
        )))
    }
}

impl Mapping {
    /// No file: every tool maps with no target, tags or extra attributes.
    pub fn plain(server: &str) -> Result<Mapping, MapError> {
        check_server_name(server)?;
        Ok(Mapping {
            server: server.to_owned(),
            tenant: String::new(),
            rules: vec![],
        })
    }

    /// A mapping file's rules; a tool no rule matches maps as with [`Mapping::plain`].
    pub fn from_yaml(server: &str, text: &str, file: &str) -> Result<Mapping, MapError> {
        check_server_name(server)?;
        let raw: RawMapping =
            serde_saphyr::from_str(text).map_err(|e| MapError(format!("{file}: {e}")))?;
        let mut rules = Vec::with_capacity(raw.tools.len());
        for (i, r) in raw.tools.into_iter().enumerate() {
            let at = format!("{file}: tools[{i}]");
            let pattern =
                Pattern::parse(&r.pattern).map_err(|e| MapError(format!("{at}.match: {e}")))?;
            crate::hook::check_attributes(&at, &r.attributes, RESERVED)?;
            rules.push(Rule { pattern, raw: r });
        }
        Ok(Mapping {
            server: server.to_owned(),
            tenant: raw.tenant,
            rules,
        })
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    fn rule_for(&self, tool: &str) -> Option<&RawRule> {
        self.rules
            .iter()
            .find(|r| r.pattern.matches(tool))
            .map(|r| &r.raw)
    }

    /// True when everything the policy can look at in this tool's jobs is
    /// fixed by the mapping (no target taken from the arguments), so one
    /// probe decides every call of it: the policy never looks at params.
    pub fn decided_by_name(&self, tool: &str) -> bool {
        self.rule_for(tool).is_none_or(|r| r.target.is_none())
    }

    /// The job (its JSON form, without an id) for one call.
    pub fn job(&self, tool: &str, arguments: &Map<String, Value>) -> Result<Value, MapError> {
        let rule = self.rule_for(tool);
        let target = match rule.and_then(|r| r.target.as_deref()) {
            None => String::new(),
            Some(field) => match arguments.get(field) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => {
                    return Err(MapError(format!(
                        "arguments.{field}: expected a string (it is the job's target), got {}",
                        crate::job::json_type(other)
                    )));
                }
            },
        };
        let mut attributes = Map::new();
        if let Some(r) = rule {
            for (k, v) in &r.attributes {
                attributes.insert(k.clone(), v.clone());
            }
        }
        attributes.insert("agent".into(), json!("mcp-proxy"));
        attributes.insert("mcp_server".into(), json!(self.server));
        attributes.insert("mcp_tool".into(), json!(tool));
        Ok(json!({
            "tenant": self.tenant,
            "topic": format!("mcp.{}.{tool}", self.server),
            "action": tool,
            "target": target,
            "risk_tags": rule.map(|r| r.risk_tags.clone()).unwrap_or_default(),
            "attributes": attributes,
            "params": arguments,
        }))
    }
}

/// The job id a call is decided under: from the server name, the proxy's
/// scope and the job hash, so the same call retried finds the same job.
/// `generation` counts identical calls already run (`.1`, `.2`, …).
pub fn job_id(server: &str, scope: &str, job_hash: &str, generation: u32) -> String {
    let mut h = Sha256::new();
    h.update(b"mcp-proxy");
    h.update([0]);
    h.update(server.as_bytes());
    h.update([0]);
    h.update(scope.as_bytes());
    h.update([0]);
    h.update(job_hash.as_bytes());
    let digest = hex::encode(h.finalize());
    let base = format!("mcp-{server}-{}", &digest[..24]);
    if generation == 0 {
        base
    } else {
        format!("{base}.{generation}")
    }
}

/// The text of a tool error for a call the policy denied.
pub fn denied_text(job_id: &str, rule: &str, reason: &str) -> String {
    format!("gavel denied this call (job {job_id}): rule `{rule}`: {reason}. It did not run.")
}

/// The text of a tool error for a call that waits for approval.
pub fn pending_text(job_id: &str, rule: &str, reason: &str, url: &str) -> String {
    format!(
        "gavel: this call needs approval (job {job_id}, rule `{rule}`: {reason}). It has not run. \
         Approve it at {url}, then make exactly the same call again: it runs once approved. \
         Changed arguments are a new request."
    )
}

/// The text of a tool error for a call an approver rejected.
pub fn rejected_text(job_id: &str, by: &str, comment: &str) -> String {
    format!("gavel: {by} rejected this call (job {job_id}): {comment}. It did not run.")
}

/// The text of a tool error for a call gavel could not decide or bind.
pub fn failed_text(why: &str) -> String {
    format!("gavel could not clear this call, so it did not run: {why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_call_maps_to_its_topic_action_and_exact_params() {
        let m = Mapping::plain("db").unwrap();
        let j = m
            .job(
                "delete_rows",
                &args(json!({"table": "users", "where": {"id": 5}})),
            )
            .unwrap();
        assert_eq!(j["topic"], "mcp.db.delete_rows");
        assert_eq!(j["action"], "delete_rows");
        assert_eq!(j["params"], json!({"table": "users", "where": {"id": 5}}));
        assert_eq!(j["attributes"]["mcp_server"], "db");
        assert_eq!(j["target"], "");
        assert!(m.decided_by_name("delete_rows"));
    }

    #[test]
    fn a_mapping_file_adds_target_tags_and_attributes() {
        let m = Mapping::from_yaml(
            "db",
            "tenant: team-a\ntools:\n  - match: \"delete_*\"\n    target: table\n    risk_tags: [destructive]\n    attributes: {env: prod}\n",
            "map.yaml",
        )
        .unwrap();
        let j = m
            .job("delete_rows", &args(json!({"table": "users"})))
            .unwrap();
        assert_eq!(j["tenant"], "team-a");
        assert_eq!(j["target"], "users");
        assert_eq!(j["risk_tags"], json!(["destructive"]));
        assert_eq!(j["attributes"]["env"], "prod");
        assert!(!m.decided_by_name("delete_rows"));
        assert!(m.decided_by_name("read_rows"));
        let e = m
            .job("delete_rows", &args(json!({"table": 5})))
            .unwrap_err();
        assert!(e.0.contains("arguments.table"), "{e}");
    }

    #[test]
    fn bad_mapping_files_and_names_are_refused_with_their_place() {
        let e = Mapping::from_yaml("db", "tools:\n  - match: x\n    colour: red\n", "m.yaml")
            .unwrap_err();
        assert!(e.0.starts_with("m.yaml"), "{e}");
        let e = Mapping::from_yaml(
            "db",
            "tools:\n  - match: x\n    attributes: {mcp_server: other}\n",
            "m.yaml",
        )
        .unwrap_err();
        assert!(e.0.contains("tools[0].attributes.mcp_server"), "{e}");
        let e = Mapping::from_yaml(
            "db",
            "tools:\n  - match: x\n    attributes: {a: [1]}\n",
            "m.yaml",
        )
        .unwrap_err();
        assert!(e.0.contains("tools[0].attributes.a"), "{e}");
        for bad in ["", "a.b", "a b", &"x".repeat(65)] {
            assert!(Mapping::plain(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn job_ids_depend_on_server_scope_and_hash_only() {
        let a = job_id("db", "s", "h1", 0);
        assert_eq!(a, job_id("db", "s", "h1", 0));
        assert!(a.starts_with("mcp-db-"));
        assert_eq!(job_id("db", "s", "h1", 2), format!("{a}.2"));
        assert_ne!(a, job_id("db", "t", "h1", 0));
        assert_ne!(a, job_id("db", "s", "h2", 0));
        assert_ne!(a, job_id("fs", "s", "h1", 0));
    }
}
