//! Shell-style globs with the exact semantics of Python's
//! `fnmatch.fnmatchcase`, compiled once per snapshot into `globset` sets.
//!
//! fnmatch and globset disagree on syntax: globset gives meaning to `**`,
//! `{a,b}`, `[^…]` and backslashes, and matches bytes rather than characters.
//! So a pattern is first parsed into fnmatch tokens, then re-emitted in a form
//! globset reads with the same meaning. Where globset's byte matching could
//! differ from fnmatch's character matching (`?` and classes against a
//! non-ASCII subject, non-ASCII class members), the token form decides.
//!
//! Two patterns that fnmatch accepts but that are almost always mistakes are
//! refused as invalid: an unclosed `[` (fnmatch reads it as a literal `[`)
//! and a reversed range like `[z-a]` (fnmatch silently drops it). Every
//! accepted pattern matches exactly as fnmatch would.

use globset::{Candidate, GlobBuilder, GlobSet, GlobSetBuilder};

/// One element of a parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `*`: any run of characters, separators included. Runs of `*` are one token.
    AnyRun,
    /// `?`: exactly one character.
    AnyOne,
    /// `[…]` / `[!…]`: one character in (or not in) the ranges. Boxed to
    /// keep every token small: a 10,000-rule policy holds ~10^6 tokens.
    Class(Box<ClassSet>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ClassSet {
    negated: bool,
    ranges: Box<[(char, char)]>,
}

/// A glob pattern that failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    #[error(
        "invalid glob `{pattern}`: unclosed `[` at character {at}; write `[[]` for a literal `[`"
    )]
    UnclosedClass { pattern: String, at: usize },
    #[error("invalid glob `{pattern}`: reversed range `{lo}-{hi}` in a character class")]
    ReversedRange { pattern: String, lo: char, hi: char },
}

/// A parsed fnmatch pattern. Cheap to clone (shared), so a policy's
/// document and its compiled indexes hold one copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(std::sync::Arc<Parsed>);

#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    source: Box<str>,
    tokens: Box<[Token]>,
}

impl Pattern {
    /// Parses a pattern with fnmatch's rules.
    pub fn parse(source: &str) -> Result<Pattern, GlobError> {
        let chars: Vec<char> = source.chars().collect();
        let n = chars.len();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < n {
            let c = chars[i];
            i += 1;
            match c {
                '*' => {
                    if tokens.last() != Some(&Token::AnyRun) {
                        tokens.push(Token::AnyRun);
                    }
                }
                '?' => tokens.push(Token::AnyOne),
                '[' => {
                    // Find the closing bracket as fnmatch does: a `!` and then a
                    // `]` right after the opening bracket are members, not the end.
                    let mut j = i;
                    if j < n && chars[j] == '!' {
                        j += 1;
                    }
                    if j < n && chars[j] == ']' {
                        j += 1;
                    }
                    while j < n && chars[j] != ']' {
                        j += 1;
                    }
                    if j >= n {
                        return Err(GlobError::UnclosedClass {
                            pattern: source.to_owned(),
                            at: i,
                        });
                    }
                    tokens.push(parse_class(source, &chars[i..j])?);
                    i = j + 1;
                }
                c => tokens.push(Token::Literal(c)),
            }
        }
        Ok(Pattern(std::sync::Arc::new(Parsed {
            source: source.into(),
            tokens: tokens.into_boxed_slice(),
        })))
    }

    pub fn as_str(&self) -> &str {
        &self.0.source
    }

    /// True when the pattern has no wildcard at all.
    pub fn is_literal(&self) -> bool {
        self.0.tokens.iter().all(|t| matches!(t, Token::Literal(_)))
    }

    /// True when the pattern matches every string (`*`).
    pub fn matches_everything(&self) -> bool {
        *self.0.tokens == [Token::AnyRun]
    }

    /// Characters that any matching subject must contain literally, a rough
    /// measure of how selective the pattern is.
    pub fn literal_len(&self) -> usize {
        self.0
            .tokens
            .iter()
            .filter(|t| matches!(t, Token::Literal(_)))
            .count()
    }

    /// Some subject the pattern matches (wildcards filled minimally), or
    /// `None` for a negated class that excludes every candidate tried.
    pub fn example(&self) -> Option<String> {
        let mut out = String::new();
        for t in &self.0.tokens {
            match t {
                Token::Literal(c) => out.push(*c),
                Token::AnyRun => {}
                Token::AnyOne => out.push('x'),
                Token::Class(set) if !set.negated => out.push(set.ranges.first()?.0),
                Token::Class(_) => {
                    let c = ['x', 'a', '0', '_', 'Z', '~']
                        .into_iter()
                        .find(|&c| token_matches(t, c))?;
                    out.push(c);
                }
            }
        }
        Some(out)
    }

    /// Matches a subject with the token form. Linear in practice: the classic
    /// wildcard algorithm backtracks only to the most recent `*`, which is
    /// exact because every other token consumes exactly one character.
    pub fn matches(&self, subject: &str) -> bool {
        let p = &self.0.tokens;
        // Positions are byte offsets into `subject`, always on char boundaries.
        let (mut si, mut pi) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while si < subject.len() {
            // INVARIANT: si < len and on a char boundary, so a char exists.
            let c = subject[si..].chars().next().unwrap_or_default();
            if pi < p.len() {
                match &p[pi] {
                    Token::AnyRun => {
                        star = Some((pi, si));
                        pi += 1;
                        continue;
                    }
                    t if token_matches(t, c) => {
                        si += c.len_utf8();
                        pi += 1;
                        continue;
                    }
                    _ => {}
                }
            }
            match star {
                Some((sp, ss)) => {
                    // Let the last `*` swallow one more character and retry.
                    let skipped = subject[ss..].chars().next().map_or(1, char::len_utf8);
                    pi = sp + 1;
                    si = ss + skipped;
                    star = Some((sp, si));
                }
                None => return false,
            }
        }
        p[pi..].iter().all(|t| *t == Token::AnyRun)
    }

    /// How globset can take this pattern: as is (literals with at most a
    /// leading or trailing `*`, which globset serves by hash lookup or
    /// prefix/suffix automata), or through a literal prefix or suffix that
    /// pre-filters subjects for the token matcher.
    fn plan(&self) -> Plan {
        let literal = |t: &Token| matches!(t, Token::Literal(_));
        let lits = |ts: &[Token]| -> String {
            ts.iter()
                .map(|t| match t {
                    Token::Literal(c) => *c,
                    _ => unreachable!("only literals are collected"),
                })
                .collect()
        };
        let t = &self.0.tokens;
        let inner_is_literal = |ts: &[Token]| ts.iter().all(literal);
        let native = match &t[..] {
            [] => true,
            [Token::AnyRun, rest @ ..] => inner_is_literal(rest),
            [rest @ .., Token::AnyRun] => inner_is_literal(rest),
            all => inner_is_literal(all),
        };
        if native {
            return Plan::Native;
        }
        let prefix_len = t.iter().take_while(|x| literal(x)).count();
        let suffix_len = t.iter().rev().take_while(|x| literal(x)).count();
        if prefix_len > 0 && prefix_len >= suffix_len {
            Plan::Prefix(lits(&t[..prefix_len]))
        } else if suffix_len > 0 {
            Plan::Suffix(lits(&t[t.len() - suffix_len..]))
        } else {
            Plan::TokensOnly
        }
    }
}

/// How a pattern is indexed (see [`Pattern::plan`]).
enum Plan {
    Native,
    Prefix(String),
    Suffix(String),
    TokensOnly,
}

fn token_matches(t: &Token, c: char) -> bool {
    match t {
        Token::Literal(l) => *l == c,
        Token::AnyOne => true,
        Token::Class(set) => set.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != set.negated,
        Token::AnyRun => false,
    }
}

/// Parses the inside of `[…]` the way fnmatch.translate does: after an
/// optional `!`, the first character is always a member; later `-` between
/// two characters make a range, scanning resumes two characters after each
/// range's `-`, and a trailing `-` is a member.
fn parse_class(source: &str, inner: &[char]) -> Result<Token, GlobError> {
    let (negated, body) = match inner.first() {
        Some('!') => (true, &inner[1..]),
        _ => (false, inner),
    };
    // Split into chunks at range hyphens, as fnmatch does.
    let mut chunks: Vec<&[char]> = Vec::new();
    let mut start = 0;
    let mut k = 1; // the first member is never a range hyphen
    while k < body.len() {
        if body[k] == '-' {
            chunks.push(&body[start..k]);
            start = k + 1;
            k += 3;
        } else {
            k += 1;
        }
    }
    let last = &body[start.min(body.len())..];
    let mut trailing_hyphen = false;
    if last.is_empty() {
        trailing_hyphen = true;
    } else {
        chunks.push(last);
    }
    // Adjacent chunks form a range from the end of one to the start of the next.
    let mut ranges = Vec::new();
    for (idx, chunk) in chunks.iter().enumerate() {
        let from = if idx == 0 { 0 } else { 1 };
        let to = if idx + 1 < chunks.len() {
            chunk.len() - 1
        } else {
            chunk.len()
        };
        for &c in chunk.get(from..to).unwrap_or(&[]) {
            ranges.push((c, c));
        }
        if idx + 1 < chunks.len() {
            // INVARIANT: every chunk is non-empty: the first holds the first
            // member, later ones start two characters after a range hyphen
            // or hold the tail, which is non-empty when pushed.
            let lo = chunk[chunk.len() - 1];
            let hi = chunks[idx + 1][0];
            if lo > hi {
                return Err(GlobError::ReversedRange {
                    pattern: source.to_owned(),
                    lo,
                    hi,
                });
            }
            ranges.push((lo, hi));
        }
    }
    if trailing_hyphen {
        ranges.push(('-', '-'));
    }
    Ok(Token::Class(Box::new(ClassSet {
        negated,
        ranges: ranges.into_boxed_slice(),
    })))
}

/// Characters with a meaning in globset outside a class. (`!` and `^`
/// only mean something right after `[`, and `,` only inside braces.)
const GLOBSET_SPECIAL: &[char] = &['*', '?', '[', ']', '{', '}', '\\'];

/// Writes literal text in globset syntax: a one-member class is the only
/// quoting globset offers without backslash escapes, and `]` is literal as a
/// class's first member.
fn push_globset_literal(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            ']' => out.push_str("[]]"),
            c if GLOBSET_SPECIAL.contains(&c) => {
                out.push('[');
                out.push(c);
                out.push(']');
            }
            c => out.push(c),
        }
    }
}

fn compile_glob(g: &str) -> Option<globset::Glob> {
    GlobBuilder::new(g)
        .literal_separator(false)
        .backslash_escape(false)
        .case_insensitive(false)
        .empty_alternates(false)
        .build()
        .ok()
}

/// Every glob of one matcher field (say all `topics` patterns of a
/// snapshot), deduplicated and compiled into one `GlobSet`.
///
/// Patterns globset serves with a hash lookup or a prefix/suffix automaton
/// (literals with at most a leading or trailing `*`) go in as they are. For
/// every other pattern the set holds its literal prefix (`prefix*`) or
/// suffix (`*suffix`), and the token matcher confirms the hits: globset would
/// otherwise put them in one regex set whose matching cost grows with the
/// number of patterns, and would match `?` and classes against bytes rather
/// than characters. Patterns with neither are checked by tokens alone.
#[derive(Debug, Clone)]
pub struct GlobIndex {
    patterns: Vec<Pattern>,
    set: GlobSet,
    /// For each globset entry: the pattern, and whether a hit must be confirmed.
    entries: Vec<(usize, bool)>,
    /// Patterns with no literal prefix or suffix: always matched by tokens.
    token_only: Vec<usize>,
}

impl Default for GlobIndex {
    fn default() -> Self {
        GlobIndex {
            patterns: Vec::new(),
            set: GlobSet::empty(),
            entries: Vec::new(),
            token_only: Vec::new(),
        }
    }
}

/// Scratch space reused across matches so evaluation allocates less.
#[derive(Debug, Default)]
pub struct GlobScratch {
    hits: Vec<usize>,
}

impl GlobIndex {
    /// Compiles already parsed patterns. Pattern `i` keeps index `i`.
    pub fn build(patterns: Vec<Pattern>) -> GlobIndex {
        let mut builder = GlobSetBuilder::new();
        let mut entries = Vec::new();
        let mut token_only = Vec::new();
        for (i, p) in patterns.iter().enumerate() {
            let (glob, confirm) = match p.plan() {
                Plan::Native => {
                    let mut g = String::new();
                    for t in p.0.tokens.iter() {
                        match t {
                            Token::AnyRun => g.push('*'),
                            Token::Literal(c) => {
                                push_globset_literal(&mut g, c.encode_utf8(&mut [0; 4]))
                            }
                            // INVARIANT: Plan::Native has only literals and `*`.
                            _ => unreachable!("native patterns hold literals and `*` only"),
                        }
                    }
                    (g, false)
                }
                Plan::Prefix(prefix) => {
                    let mut g = String::new();
                    push_globset_literal(&mut g, &prefix);
                    g.push('*');
                    (g, true)
                }
                Plan::Suffix(suffix) => {
                    let mut g = String::from("*");
                    push_globset_literal(&mut g, &suffix);
                    (g, true)
                }
                Plan::TokensOnly => {
                    token_only.push(i);
                    continue;
                }
            };
            match compile_glob(&glob) {
                Some(g) => {
                    builder.add(g);
                    entries.push((i, confirm));
                }
                // INVARIANT: the syntax above is always valid for globset;
                // should it not be, tokens still match the pattern exactly.
                None => token_only.push(i),
            }
        }
        let set = builder.build().unwrap_or_else(|_| {
            // INVARIANT: each glob compiled on its own; a set of them fails
            // only on resource limits, and then tokens take over.
            token_only = (0..patterns.len()).collect();
            entries.clear();
            GlobSet::empty()
        });
        GlobIndex {
            patterns,
            set,
            entries,
            token_only,
        }
    }

    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Collects the indexes of every pattern matching `subject` into `out`
    /// (cleared first, sorted on return).
    pub fn matches_into(&self, subject: &str, scratch: &mut GlobScratch, out: &mut Vec<usize>) {
        out.clear();
        if self.patterns.is_empty() {
            return;
        }
        if !self.entries.is_empty() {
            let candidate = Candidate::new(subject);
            self.set
                .matches_candidate_into(&candidate, &mut scratch.hits);
            for &h in &scratch.hits {
                let (p, confirm) = self.entries[h];
                if !confirm || self.patterns[p].matches(subject) {
                    out.push(p);
                }
            }
        }
        for &p in &self.token_only {
            if self.patterns[p].matches(subject) {
                out.push(p);
            }
        }
        out.sort_unstable();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        let pat = Pattern::parse(p).unwrap();
        let tokens = pat.matches(s);
        let idx = GlobIndex::build(vec![pat]);
        let mut out = Vec::new();
        idx.matches_into(s, &mut GlobScratch::default(), &mut out);
        assert_eq!(
            tokens,
            !out.is_empty(),
            "tokens and globset disagree: {p:?} vs {s:?}"
        );
        tokens
    }

    #[test]
    fn fnmatch_basics() {
        assert!(m("job.*.read", "job.repo.read"));
        assert!(m("job.*.read", "job.a/b.c.read"));
        assert!(!m("job.*.read", "job.repo.write"));
        assert!(m("production_*", "production_db"));
        assert!(m("production_*", "production_"));
        assert!(!m("production_*", "Production_db"));
        assert!(m("a?c", "a/c"));
        assert!(m("a?c", "aéc"));
        assert!(!m("a?c", "ac"));
        assert!(m("*", ""));
        assert!(m("", ""));
        assert!(!m("", "a"));
        assert!(m("a**b", "ab"));
        assert!(m("a/**/b", "a/x/b"));
        assert!(!m("a/**/b", "a/b"), "`**` is just two stars");
        assert!(m("*", "line\nbreak"));
        // globset matches bytes: `??` must not match the two bytes of `é`.
        assert!(!m("??", "é"));
        assert!(!m("a??", "aé"));
        assert!(m("?", "é"));
        assert!(!m("[!a][!a]", "é"));
        assert!(m("[!a]", "é"));
        assert!(m("prod*", "prod\n"));
    }

    #[test]
    fn globset_syntax_has_no_meaning() {
        assert!(m("{a,b}", "{a,b}"));
        assert!(!m("{a,b}", "a"));
        assert!(m("a\\b", "a\\b"));
        assert!(m("[^a]", "^"));
        assert!(m("[^a]", "a"));
        assert!(!m("[^a]", "b"));
        assert!(m("!x", "!x"));
    }

    #[test]
    fn classes() {
        assert!(m("[!a]", "b"));
        assert!(!m("[!a]", "a"));
        assert!(m("[]]", "]"));
        assert!(m("[!]]", "a"));
        assert!(!m("[!]]", "]"));
        assert!(m("[]-a]", "^"));
        assert!(m("[-a]", "-"));
        assert!(m("[a-]", "-"));
        assert!(m("[a-c-e]", "-"));
        assert!(m("[a-c-e]", "b"));
        assert!(!m("[a-c-e]", "d"));
        assert!(m("[!-a]", "b"));
        assert!(!m("[!-a]", "-"));
        assert!(m("[é]", "é"));
        assert!(m("[a-é]", "z"));
        assert!(m("[!é]", "e"));
        assert!(m("[\\]", "\\"));
        assert!(m("[^]", "^"), "a lone `^` is a member, not negation");
        assert!(!m("[^]", "a"));
        assert!(m("[!^]x", "ax"));
        assert!(m("[^!]", "!"));
        assert!(m("[!^]", "a"));
        assert!(!m("[!^]", "^"));
        assert!(m("[!!]", "a"));
        assert!(m("[*?]", "?"));
        assert!(m("[!-#]", "\""));
        assert!(!m("[!-#]", "-"));
        assert!(!m("[!-#]", "#"));
    }

    #[test]
    fn mistakes_are_refused() {
        assert!(matches!(
            Pattern::parse("prod["),
            Err(GlobError::UnclosedClass { .. })
        ));
        assert!(matches!(
            Pattern::parse("[z-a]"),
            Err(GlobError::ReversedRange {
                lo: 'z',
                hi: 'a',
                ..
            })
        ));
        assert!(Pattern::parse("[]").is_err());
        assert!(Pattern::parse("[!]").is_err());
    }

    #[test]
    fn index_reports_all_matching_patterns() {
        let pats = [
            "job.*",
            "job.deploy.*",
            "*.read",
            "job.deploy.prod",
            "other",
        ]
        .iter()
        .map(|p| Pattern::parse(p).unwrap())
        .collect();
        let idx = GlobIndex::build(pats);
        let mut out = Vec::new();
        let mut scratch = GlobScratch::default();
        idx.matches_into("job.deploy.prod", &mut scratch, &mut out);
        assert_eq!(out, vec![0, 1, 3]);
        idx.matches_into("x.read", &mut scratch, &mut out);
        assert_eq!(out, vec![2]);
    }
}
