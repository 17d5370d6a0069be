//! `{field}` templates for decision summaries, parsed once at load time so
//! rendering only copies strings. `{{` and `}}` stand for literal braces.

use super::model::Decision;
use crate::job::Job;

/// The placeholders a summary may use.
pub const FIELDS: &str = "job_id, tenant, topic, action, target, risk_tags, principal, decision, rule, reason, approvers, attributes.<name>, proposal.title, proposal.why, proposal.blast_radius, proposal.reversible, proposal.estimated_cost_usd";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    JobId,
    Tenant,
    Topic,
    Action,
    Target,
    RiskTags,
    Principal,
    Decision,
    Rule,
    Reason,
    Approvers,
    Attribute(String),
    ProposalTitle,
    ProposalWhy,
    ProposalBlastRadius,
    ProposalReversible,
    ProposalCost,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Text(String),
    Field(Field),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
}

/// What a template can refer to.
pub struct Context<'a> {
    pub job: &'a Job,
    pub principal: Option<&'a str>,
    pub decision: Decision,
    pub rule: &'a str,
    pub reason: &'a str,
    pub approvers: u32,
}

fn field(name: &str) -> Option<Field> {
    Some(match name {
        "job_id" => Field::JobId,
        "tenant" => Field::Tenant,
        "topic" => Field::Topic,
        "action" => Field::Action,
        "target" => Field::Target,
        "risk_tags" => Field::RiskTags,
        "principal" => Field::Principal,
        "decision" => Field::Decision,
        "rule" => Field::Rule,
        "reason" => Field::Reason,
        "approvers" => Field::Approvers,
        "proposal.title" => Field::ProposalTitle,
        "proposal.why" => Field::ProposalWhy,
        "proposal.blast_radius" => Field::ProposalBlastRadius,
        "proposal.reversible" => Field::ProposalReversible,
        "proposal.estimated_cost_usd" => Field::ProposalCost,
        other => match other.strip_prefix("attributes.") {
            Some(key) if !key.is_empty() => Field::Attribute(key.to_owned()),
            _ => return None,
        },
    })
}

impl Template {
    /// Parses a template, naming the first bad placeholder.
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut segments = Vec::new();
        let mut text = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        name.push(c);
                    }
                    if !closed {
                        return Err(format!(
                            "unclosed placeholder `{{{name}` in `{s}`; write `{{{{` for a literal brace"
                        ));
                    }
                    let f = field(name.trim()).ok_or_else(|| {
                        format!("unknown placeholder `{{{name}}}`; expected one of {FIELDS}")
                    })?;
                    if !text.is_empty() {
                        segments.push(Segment::Text(std::mem::take(&mut text)));
                    }
                    segments.push(Segment::Field(f));
                }
                '}' => {
                    return Err(format!(
                        "unmatched `}}` in `{s}`; write `}}}}` for a literal brace"
                    ));
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            segments.push(Segment::Text(text));
        }
        Ok(Template { segments })
    }

    /// Renders the template; a field the job does not have renders empty.
    pub fn render(&self, ctx: &Context<'_>) -> String {
        let mut out = String::new();
        for seg in &self.segments {
            match seg {
                Segment::Text(t) => out.push_str(t),
                Segment::Field(f) => {
                    let job = ctx.job;
                    let proposal = job.proposal.as_ref();
                    match f {
                        Field::JobId => {
                            if let Some(id) = &job.job_id {
                                out.push_str(id.as_str());
                            }
                        }
                        Field::Tenant => out.push_str(&job.tenant),
                        Field::Topic => out.push_str(&job.topic),
                        Field::Action => out.push_str(&job.action),
                        Field::Target => out.push_str(&job.target),
                        Field::RiskTags => {
                            let tags: Vec<&str> =
                                job.risk_tags.iter().map(String::as_str).collect();
                            out.push_str(&tags.join(", "));
                        }
                        Field::Principal => out.push_str(ctx.principal.unwrap_or("")),
                        Field::Decision => out.push_str(ctx.decision.as_str()),
                        Field::Rule => out.push_str(ctx.rule),
                        Field::Reason => out.push_str(ctx.reason),
                        Field::Approvers => out.push_str(&ctx.approvers.to_string()),
                        Field::Attribute(k) => {
                            if let Some(v) = job.attributes.get(k) {
                                out.push_str(&v.to_string());
                            }
                        }
                        Field::ProposalTitle => {
                            out.push_str(proposal.map(|p| p.title.as_str()).unwrap_or(""))
                        }
                        Field::ProposalWhy => {
                            out.push_str(proposal.map(|p| p.why.as_str()).unwrap_or(""))
                        }
                        Field::ProposalBlastRadius => {
                            out.push_str(proposal.map(|p| p.blast_radius.as_str()).unwrap_or(""))
                        }
                        Field::ProposalReversible => {
                            if let Some(r) = proposal.and_then(|p| p.reversible) {
                                out.push_str(if r { "true" } else { "false" });
                            }
                        }
                        Field::ProposalCost => {
                            if let Some(c) = proposal.and_then(|p| p.estimated_cost_usd) {
                                out.push_str(&c.to_string());
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{Job, Limits};

    #[test]
    fn renders_fields_and_escapes() {
        let job = Job::from_json(
            br#"{"job_id":"j1","topic":"job.deploy.api","target":"prod-eu","attributes":{"env":"prod","n":3}}"#,
            &Limits::default(),
        )
        .unwrap();
        let ctx = Context {
            job: &job,
            principal: Some("agent-7"),
            decision: Decision::RequireApproval,
            rule: "r1",
            reason: "because",
            approvers: 2,
        };
        let t = Template::parse(
            "Review {topic} on {target} ({attributes.env}, n={attributes.n}, {missing_ok}",
        )
        .unwrap_err();
        assert!(t.contains("unknown placeholder `{missing_ok}`"), "{t}");
        let t = Template::parse("Review {topic} on {target} [{attributes.env}] {{x}} by {principal} {job_id} {approvers} {proposal.title}").unwrap();
        assert_eq!(
            t.render(&ctx),
            "Review job.deploy.api on prod-eu [prod] {x} by agent-7 j1 2 "
        );
    }

    #[test]
    fn malformed_templates_are_refused() {
        assert!(Template::parse("{topic").is_err());
        assert!(Template::parse("a } b").is_err());
        assert!(Template::parse("{attributes.}").is_err());
        assert!(Template::parse("plain").is_ok());
    }
}
