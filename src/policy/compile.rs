//! A validated document compiled for evaluation: every glob of the snapshot
//! in one `GlobSet` per matcher field, and an index that picks, per job, the
//! few rules worth checking. Built once per snapshot; evaluation compiles
//! nothing.

use super::glob::{GlobIndex, Pattern};
use super::model::*;
use super::template::Template;
use std::collections::{BTreeMap, HashMap};

/// A compiled attribute test.
#[derive(Debug, Clone)]
pub(crate) enum CompiledAttr {
    /// Pattern `pattern` of the attribute key's glob index.
    Glob {
        pattern: usize,
    },
    Ops(std::sync::Arc<AttrOps>),
}

/// A compiled `match` block (a rule's, or a nested `not`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Node {
    /// Per glob field: the pattern ids (into that field's index), or `None`
    /// when the block does not test the field.
    pub globs: [Option<Vec<usize>>; 4],
    pub risk_tags: Vec<String>,
    pub risk_tags_none: Vec<String>,
    /// (attribute key index, test)
    pub attrs: Vec<(usize, CompiledAttr)>,
    pub not: Option<usize>,
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledSummary {
    pub title: Option<Template>,
    pub why: Option<Template>,
    pub next_effect: Option<Template>,
}

/// A policy ready to evaluate. Immutable; shared by `Arc` between requests.
#[derive(Debug, Clone)]
pub struct Policy {
    pub(crate) doc: PolicyDoc,
    /// The top-level node of rule `i` is `nodes[i]`; nested `not` blocks follow.
    pub(crate) nodes: Vec<Node>,
    pub(crate) fields: [GlobIndex; 4],
    /// Per field and pattern: the rules anchored on that pattern.
    pub(crate) anchors: [Vec<Vec<u32>>; 4],
    /// Per tag: the rules anchored on it.
    pub(crate) tag_anchors: HashMap<String, Vec<u32>>,
    /// Rules with nothing to anchor on: checked for every job.
    pub(crate) unanchored: Vec<u32>,
    pub(crate) attr_keys: HashMap<String, usize>,
    pub(crate) attr_names: Vec<String>,
    pub(crate) attr_globs: Vec<GlobIndex>,
    pub(crate) summaries: Vec<Option<CompiledSummary>>,
}

/// Interns patterns per field so a glob shared by many rules is matched once.
#[derive(Default)]
struct Interner {
    ids: HashMap<String, usize>,
    patterns: Vec<Pattern>,
}

impl Interner {
    fn intern(&mut self, glob: &Pattern) -> usize {
        if let Some(&id) = self.ids.get(glob.as_str()) {
            return id;
        }
        let id = self.patterns.len();
        self.patterns.push(glob.clone());
        self.ids.insert(glob.as_str().to_owned(), id);
        id
    }
}

struct Builder {
    fields: [Interner; 4],
    attr_keys: HashMap<String, usize>,
    attr_names: Vec<String>,
    attr_interners: Vec<Interner>,
    nodes: Vec<Node>,
}

impl Builder {
    fn node(&mut self, m: &MatchSpec, slot: Option<usize>) -> usize {
        let mut node = Node::default();
        for f in GlobField::ALL {
            if let Some(globs) = m.globs(f) {
                let mut ids: Vec<usize> = globs
                    .iter()
                    .map(|g| self.fields[f.index()].intern(g))
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                node.globs[f.index()] = Some(ids);
            }
        }
        node.risk_tags = m.risk_tags.iter().cloned().collect();
        node.risk_tags_none = m.risk_tags_none.iter().cloned().collect();
        for (key, test) in &m.attributes {
            let k = match self.attr_keys.get(key) {
                Some(&k) => k,
                None => {
                    let k = self.attr_names.len();
                    self.attr_keys.insert(key.clone(), k);
                    self.attr_names.push(key.clone());
                    self.attr_interners.push(Interner::default());
                    k
                }
            };
            let compiled = match test {
                AttrTest::Glob(g) => CompiledAttr::Glob {
                    pattern: self.attr_interners[k].intern(g),
                },
                AttrTest::Ops(ops) => CompiledAttr::Ops(ops.clone()),
            };
            node.attrs.push((k, compiled));
        }
        let id = match slot {
            Some(i) => i,
            None => {
                self.nodes.push(Node::default());
                self.nodes.len() - 1
            }
        };
        if let Some(not) = &m.not {
            node.not = Some(self.node(not, None));
        }
        self.nodes[id] = node;
        id
    }
}

fn compile_summary(s: &SummarySpec) -> CompiledSummary {
    // INVARIANT: validation parsed every template already.
    let t = |x: &Option<String>| x.as_deref().and_then(|s| Template::parse(s).ok());
    CompiledSummary {
        title: t(&s.title),
        why: t(&s.why),
        next_effect: t(&s.next_effect),
    }
}

/// How likely a glob is to match an arbitrary subject: lower is rarer.
fn glob_shape_cost(p: &Pattern) -> f64 {
    if p.is_literal() {
        1.0
    } else if p.literal_len() >= 3 {
        2.0
    } else {
        16.0
    }
}

/// A value many rules test for (an action like `deploy`, a tag like `prod`)
/// is a value many jobs carry: anchoring on it makes a rule a candidate
/// often. The cost of an anchor grows with the share of rules sharing it.
fn share_factor(sharing: usize, rules: usize) -> f64 {
    1.0 + 64.0 * sharing as f64 / rules.max(1) as f64
}

/// Tags are coarse (`prod`, `write`): prefer a selective glob.
const TAG_BASE_COST: f64 = 4.0;

impl Policy {
    /// Compiles a validated document.
    pub fn compile(doc: PolicyDoc) -> Policy {
        let n = doc.rules.len();
        let mut b = Builder {
            fields: Default::default(),
            attr_keys: HashMap::new(),
            attr_names: Vec::new(),
            attr_interners: Vec::new(),
            nodes: vec![Node::default(); n],
        };
        for (i, rule) in doc.rules.iter().enumerate() {
            b.node(&rule.matcher, Some(i));
        }

        // How many rules test each tag and each pattern, to anchor on the rarest.
        let mut tag_counts: BTreeMap<&str, usize> = BTreeMap::new();
        let mut pattern_counts: [Vec<usize>; 4] = Default::default();
        for (f, interner) in b.fields.iter().enumerate() {
            pattern_counts[f] = vec![0; interner.patterns.len()];
        }
        for node in &b.nodes[..n] {
            for t in &node.risk_tags {
                *tag_counts.entry(t.as_str()).or_default() += 1;
            }
            for (f, ids) in node.globs.iter().enumerate() {
                for &p in ids.iter().flatten() {
                    pattern_counts[f][p] += 1;
                }
            }
        }

        let mut anchors: [Vec<Vec<u32>>; 4] = Default::default();
        for (f, interner) in b.fields.iter().enumerate() {
            anchors[f] = vec![Vec::new(); interner.patterns.len()];
        }
        let mut tag_anchors: HashMap<String, Vec<u32>> = HashMap::new();
        let mut unanchored = Vec::new();
        for (i, node) in b.nodes[..n].iter().enumerate() {
            let rule = i as u32;
            // The cheapest way to rule this rule out: a glob field (every
            // pattern's posting) or its rarest required tag.
            let mut best: Option<(f64, Anchor)> = None;
            for (f, globs) in node.globs.iter().enumerate() {
                let Some(ids) = globs else { continue };
                let pats = &b.fields[f].patterns;
                if ids.iter().any(|&p| pats[p].matches_everything()) {
                    continue;
                }
                let cost: f64 = ids
                    .iter()
                    .map(|&p| glob_shape_cost(&pats[p]) * share_factor(pattern_counts[f][p], n))
                    .sum();
                if best.as_ref().is_none_or(|(c, _)| cost < *c) {
                    best = Some((cost, Anchor::Field(f)));
                }
            }
            if let Some(tag) = node
                .risk_tags
                .iter()
                .min_by_key(|t| tag_counts.get(t.as_str()).copied().unwrap_or(0))
            {
                let sharing = tag_counts.get(tag.as_str()).copied().unwrap_or(0);
                let cost = TAG_BASE_COST * share_factor(sharing, n);
                if best.as_ref().is_none_or(|(c, _)| cost < *c) {
                    best = Some((cost, Anchor::Tag(tag.clone())));
                }
            }
            match best {
                Some((_, Anchor::Field(f))) => {
                    for &p in node.globs[f].iter().flatten() {
                        anchors[f][p].push(rule);
                    }
                }
                Some((_, Anchor::Tag(t))) => tag_anchors.entry(t).or_default().push(rule),
                None => unanchored.push(rule),
            }
        }

        let summaries = doc
            .rules
            .iter()
            .map(|r| r.summary.as_ref().map(compile_summary))
            .collect();
        let [f0, f1, f2, f3] = b.fields;
        let fields = [
            GlobIndex::build(f0.patterns),
            GlobIndex::build(f1.patterns),
            GlobIndex::build(f2.patterns),
            GlobIndex::build(f3.patterns),
        ];
        let attr_globs = b
            .attr_interners
            .into_iter()
            .map(|i| GlobIndex::build(i.patterns))
            .collect();
        Policy {
            doc,
            nodes: b.nodes,
            fields,
            anchors,
            tag_anchors,
            unanchored,
            attr_keys: b.attr_keys,
            attr_names: b.attr_names,
            attr_globs,
            summaries,
        }
    }

    /// The validated document this policy was compiled from.
    pub fn doc(&self) -> &PolicyDoc {
        &self.doc
    }

    pub fn rules(&self) -> &[RuleSpec] {
        &self.doc.rules
    }
}

enum Anchor {
    Field(usize),
    Tag(String),
}
