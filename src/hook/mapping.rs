//! From a tool call to a job: which topic, action and target a tool call
//! becomes, from a small YAML mapping file and built-in defaults for shell
//! commands, file writes and edits, web fetches and MCP tools.
//!
//! The job's `params` are the tool's input **exactly** (minus fields a rule
//! names in `ignore`, which must not change what runs, such as Claude
//! Code's `description` of a Bash command); so binding the job binds every
//! byte the tool will run with. `attributes` carry the agent, tool, working
//! directory and session, so policy rules can match on them.

use super::{Agent, ToolCall};
use crate::policy::glob::Pattern;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::fmt;

/// One mapping rule, as written in the file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    /// A glob over the tool name (`Bash`, `mcp__*`).
    #[serde(rename = "match")]
    pattern: String,
    /// Only for these agents (all when absent).
    #[serde(default)]
    agents: Vec<Agent>,
    /// May use `{tool}`, and for MCP tools `{server}` and `{mcp_tool}`.
    topic: String,
    action: String,
    /// The input field whose (string) value becomes the job's target.
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    risk_tags: Vec<String>,
    /// Fixed attributes added to the job (string, number or bool values).
    #[serde(default)]
    attributes: BTreeMap<String, Value>,
    /// Input fields left out of the job (they must not change what runs).
    #[serde(default)]
    ignore: Vec<String>,
    /// The target is a shell command: tag compound commands `shell-compound`.
    #[serde(default)]
    shell: bool,
    /// The target field holds an `apply_patch` body: the target is the one
    /// file it touches, or empty with the tag `multi-file`.
    #[serde(default)]
    patch: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    /// The tenant every job is decided for.
    #[serde(default)]
    tenant: String,
    /// Append the built-in rules after these (default true).
    #[serde(default = "yes")]
    defaults: bool,
    #[serde(default)]
    tools: Vec<RawRule>,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug)]
struct Rule {
    pattern: Pattern,
    raw: RawRule,
}

/// The compiled mapping.
#[derive(Clone, Debug)]
pub struct Mapping {
    tenant: String,
    rules: Vec<Rule>,
}

/// A mapping file that cannot be used, or a call it cannot map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapError(pub String);

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const SHELL_META: &[&str] = &["&&", "||", ";", "|", "`", "$(", ">", "<", "\n", "&"];

fn builtin() -> Vec<RawRule> {
    let rule = |pattern: &str, agents: &[Agent], topic: &str, action: &str, target: &str| RawRule {
        pattern: pattern.into(),
        agents: agents.to_vec(),
        topic: topic.into(),
        action: action.into(),
        target: (!target.is_empty()).then(|| target.to_owned()),
        risk_tags: vec![],
        attributes: BTreeMap::new(),
        ignore: vec![],
        shell: false,
        patch: false,
    };
    use Agent::*;
    let shell = |pattern: &str, agents: &[Agent]| RawRule {
        shell: true,
        ignore: vec!["description".into()],
        ..rule(pattern, agents, "agent.shell", "exec", "command")
    };
    let web = |pattern: &str, agents: &[Agent], target: &str| RawRule {
        risk_tags: vec!["egress".into()],
        ..rule(pattern, agents, "agent.web", "fetch", target)
    };
    vec![
        shell("Bash", &[ClaudeCode, Codex]),
        shell("run_shell_command", &[Gemini]),
        shell("Shell", &[Cursor]),
        RawRule {
            patch: true,
            ..rule("apply_patch", &[Codex], "agent.file", "patch", "command")
        },
        rule(
            "Write",
            &[ClaudeCode, Cursor],
            "agent.file",
            "write",
            "file_path",
        ),
        rule("write_file", &[Gemini], "agent.file", "write", "file_path"),
        rule(
            "Edit",
            &[ClaudeCode, Cursor],
            "agent.file",
            "edit",
            "file_path",
        ),
        rule(
            "MultiEdit",
            &[ClaudeCode],
            "agent.file",
            "edit",
            "file_path",
        ),
        rule("StrReplace", &[Cursor], "agent.file", "edit", "file_path"),
        rule("replace", &[Gemini], "agent.file", "edit", "file_path"),
        rule(
            "NotebookEdit",
            &[ClaudeCode],
            "agent.file",
            "edit",
            "notebook_path",
        ),
        web("WebFetch", &[ClaudeCode], "url"),
        web("web_fetch", &[Gemini], ""),
        rule("mcp__*", &[], "mcp.{server}.{mcp_tool}", "{mcp_tool}", ""),
        rule("MCP:*", &[], "mcp.{server}.{mcp_tool}", "{mcp_tool}", ""),
    ]
}

impl Mapping {
    /// The built-in rules alone.
    pub fn builtin() -> Mapping {
        Mapping::compile(String::new(), builtin(), "built-in").expect("the built-in rules compile")
    }

    /// A mapping file's rules, then (unless `defaults: false`) the built-in ones.
    pub fn from_yaml(text: &str, file: &str) -> Result<Mapping, MapError> {
        let raw: RawMapping =
            serde_saphyr::from_str(text).map_err(|e| MapError(format!("{file}: {e}")))?;
        let mut rules = raw.tools;
        if raw.defaults {
            rules.extend(builtin());
        }
        Mapping::compile(raw.tenant, rules, file)
    }

    fn compile(tenant: String, raw: Vec<RawRule>, file: &str) -> Result<Mapping, MapError> {
        let mut rules = Vec::with_capacity(raw.len());
        for (i, r) in raw.into_iter().enumerate() {
            let at = format!("{file}: tools[{i}]");
            let pattern =
                Pattern::parse(&r.pattern).map_err(|e| MapError(format!("{at}.match: {e}")))?;
            if r.topic.is_empty() || r.action.is_empty() {
                return Err(MapError(format!(
                    "{at}: topic and action must not be empty"
                )));
            }
            if r.patch && r.target.is_none() {
                return Err(MapError(format!(
                    "{at}: `patch: true` needs the `target` field holding the patch"
                )));
            }
            check_attributes(&at, &r.attributes, &[])?;
            rules.push(Rule { pattern, raw: r });
        }
        Ok(Mapping { tenant, rules })
    }

    /// The first rule that maps this call.
    fn rule_for(&self, call: &ToolCall) -> Option<&Rule> {
        self.rules.iter().find(|r| {
            (r.raw.agents.is_empty() || r.raw.agents.contains(&call.agent))
                && r.pattern.matches(&call.tool)
        })
    }

    /// The job (in its JSON form, without an id) for a call; a call no rule
    /// maps is refused: unknown tools do not run.
    pub fn job(&self, call: &ToolCall) -> Result<Value, MapError> {
        let rule = self.rule_for(call).ok_or_else(|| {
            MapError(format!(
                "no mapping for the {} tool `{}`; add one to the mapping file (--map)",
                call.agent, call.tool
            ))
        })?;
        let r = &rule.raw;
        let (server, mcp_tool) = call
            .mcp
            .clone()
            .unwrap_or_else(|| (String::new(), String::new()));
        let fill = |t: &str| {
            t.replace("{tool}", &call.tool)
                .replace("{server}", &server)
                .replace("{mcp_tool}", &mcp_tool)
        };
        let mut risk_tags = r.risk_tags.clone();
        let mut target = match &r.target {
            None => String::new(),
            Some(field) => match call.input.get(field) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => {
                    return Err(MapError(format!(
                        "tool_input.{field}: expected a string, got {}",
                        crate::job::json_type(other)
                    )));
                }
            },
        };
        if r.patch {
            let files = patch_files(&target);
            target = match files.as_slice() {
                [one] => one.clone(),
                _ => {
                    risk_tags.push("multi-file".into());
                    String::new()
                }
            };
        }
        if r.shell && SHELL_META.iter().any(|m| target.contains(m)) {
            risk_tags.push("shell-compound".into());
        }
        let params: Map<String, Value> = call
            .input
            .iter()
            .filter(|(k, _)| !r.ignore.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut attributes = Map::new();
        for (k, v) in &r.attributes {
            attributes.insert(k.clone(), v.clone());
        }
        attributes.insert("agent".into(), json!(call.agent.as_str()));
        attributes.insert("tool".into(), json!(call.tool));
        attributes.insert("cwd".into(), json!(call.cwd));
        attributes.insert("session".into(), json!(call.session));
        Ok(json!({
            "tenant": self.tenant,
            "topic": fill(&r.topic),
            "action": fill(&r.action),
            "target": target,
            "risk_tags": risk_tags,
            "attributes": attributes,
            "params": params,
        }))
    }

    /// The input to run: the bound params, plus the fields the rule left
    /// out of the job (they do not change what runs).
    pub fn input_to_run(
        &self,
        call: &ToolCall,
        bound_params: &Map<String, Value>,
    ) -> Map<String, Value> {
        let mut out = bound_params.clone();
        if let Some(rule) = self.rule_for(call) {
            for k in &rule.raw.ignore {
                if let Some(v) = call.input.get(k) {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        out
    }
}

/// Checks a mapping rule's fixed attributes: plain values only, none of the
/// names the door sets itself (`reserved`).
pub(crate) fn check_attributes(
    at: &str,
    attributes: &BTreeMap<String, Value>,
    reserved: &[&str],
) -> Result<(), MapError> {
    for (k, v) in attributes {
        if reserved.contains(&k.as_str()) {
            return Err(MapError(format!(
                "{at}.attributes.{k}: set by the door itself"
            )));
        }
        if !(v.is_string() || v.is_number() || v.is_boolean()) {
            return Err(MapError(format!(
                "{at}.attributes.{k}: must be a string, number or bool"
            )));
        }
    }
    Ok(())
}

/// The files an `apply_patch` body adds, updates, deletes or moves to.
fn patch_files(body: &str) -> Vec<String> {
    let mut files: Vec<String> = Vec::new();
    for line in body.lines() {
        let path = [
            "*** Add File: ",
            "*** Update File: ",
            "*** Delete File: ",
            "*** Move to: ",
        ]
        .iter()
        .find_map(|p| line.strip_prefix(p));
        if let Some(p) = path {
            let p = p.trim().to_owned();
            if !files.contains(&p) {
                files.push(p);
            }
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(agent: Agent, tool: &str, input: Value) -> ToolCall {
        ToolCall {
            agent,
            tool: tool.into(),
            input: input.as_object().unwrap().clone(),
            cwd: "/repo".into(),
            session: "s-1".into(),
            mcp: super::super::mcp_name(tool),
        }
    }

    #[test]
    fn shell_commands_become_agent_shell_jobs_and_compound_ones_are_tagged() {
        let m = Mapping::builtin();
        let j = m
            .job(&call(
                Agent::ClaudeCode,
                "Bash",
                json!({"command": "git status", "description": "look", "timeout": 5}),
            ))
            .unwrap();
        assert_eq!(j["topic"], "agent.shell");
        assert_eq!(j["action"], "exec");
        assert_eq!(j["target"], "git status");
        assert_eq!(j["params"], json!({"command": "git status", "timeout": 5}));
        assert_eq!(j["risk_tags"], json!([]));
        assert_eq!(j["attributes"]["cwd"], "/repo");
        for cmd in [
            "ls; rm -rf /",
            "a && b",
            "cat x | sh",
            "echo $(id)",
            "x > y",
            "sleep 1 & rm z",
        ] {
            let j = m
                .job(&call(
                    Agent::Gemini,
                    "run_shell_command",
                    json!({"command": cmd}),
                ))
                .unwrap();
            assert_eq!(j["risk_tags"], json!(["shell-compound"]), "{cmd}");
        }
    }

    #[test]
    fn patches_name_their_single_file_or_are_tagged_multi_file() {
        let m = Mapping::builtin();
        let one = "*** Begin Patch\n*** Update File: src/a.rs\n@@\n-x\n+y\n*** End Patch";
        let j = m
            .job(&call(Agent::Codex, "apply_patch", json!({"command": one})))
            .unwrap();
        assert_eq!(j["target"], "src/a.rs");
        let two = "*** Begin Patch\n*** Add File: a\n+x\n*** Delete File: b\n*** End Patch";
        let j = m
            .job(&call(Agent::Codex, "apply_patch", json!({"command": two})))
            .unwrap();
        assert_eq!(j["target"], "");
        assert_eq!(j["risk_tags"], json!(["multi-file"]));
    }

    #[test]
    fn mcp_tools_become_mcp_topics() {
        let j = Mapping::builtin()
            .job(&call(
                Agent::ClaudeCode,
                "mcp__db__delete_rows",
                json!({"table": "t"}),
            ))
            .unwrap();
        assert_eq!(j["topic"], "mcp.db.delete_rows");
        assert_eq!(j["action"], "delete_rows");
    }

    #[test]
    fn unknown_tools_and_tools_of_other_agents_are_refused() {
        let m = Mapping::builtin();
        let e = m
            .job(&call(Agent::ClaudeCode, "Teleport", json!({})))
            .unwrap_err();
        assert!(
            e.0.contains("no mapping for the claude-code tool `Teleport`"),
            "{e}"
        );
        assert!(
            m.job(&call(Agent::ClaudeCode, "run_shell_command", json!({})))
                .is_err()
        );
        let e = m
            .job(&call(Agent::ClaudeCode, "Write", json!({"file_path": 3})))
            .unwrap_err();
        assert!(
            e.0.contains("tool_input.file_path: expected a string"),
            "{e}"
        );
    }

    #[test]
    fn a_mapping_file_adds_rules_before_the_defaults() {
        let m = Mapping::from_yaml(
            "tenant: acme\ntools:\n  - match: Read\n    agents: [claude-code]\n    topic: agent.file\n    action: read\n    target: file_path\n    attributes: { team: platform }\n",
            "map.yaml",
        )
        .unwrap();
        let j = m
            .job(&call(Agent::ClaudeCode, "Read", json!({"file_path": "/a"})))
            .unwrap();
        assert_eq!(j["tenant"], "acme");
        assert_eq!(j["action"], "read");
        assert_eq!(j["attributes"]["team"], "platform");
        assert!(
            m.job(&call(Agent::ClaudeCode, "Bash", json!({"command": "x"})))
                .is_ok()
        );
        let only = Mapping::from_yaml("defaults: false\n", "m.yaml").unwrap();
        assert!(
            only.job(&call(Agent::ClaudeCode, "Bash", json!({"command": "x"})))
                .is_err()
        );
    }

    #[test]
    fn bad_mapping_files_are_refused_with_their_place() {
        for (text, want) in [
            ("tools: [{match: x, topic: t}]", "map.yaml"),
            (
                "tools: [{match: '[', topic: t, action: a}]",
                "tools[0].match",
            ),
            (
                "tools: [{match: x, topic: t, action: a, attributes: {k: [1]}}]",
                "tools[0].attributes.k",
            ),
            (
                "tools: [{match: x, topic: t, action: a, patch: true}]",
                "tools[0]",
            ),
            (
                "tools: [{match: x, topic: t, action: a, agents: [vim]}]",
                "map.yaml",
            ),
            ("surprise: 1", "map.yaml"),
        ] {
            let e = Mapping::from_yaml(text, "map.yaml").unwrap_err();
            assert!(e.0.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn ignored_fields_come_back_in_the_input_to_run() {
        let m = Mapping::builtin();
        let c = call(
            Agent::ClaudeCode,
            "Bash",
            json!({"command": "x", "description": "d"}),
        );
        let bound = json!({"command": "x"}).as_object().unwrap().clone();
        assert_eq!(
            Value::Object(m.input_to_run(&c, &bound)),
            json!({"command": "x", "description": "d"})
        );
    }
}
