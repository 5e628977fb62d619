//! Secret redaction: credentials in command lines, paths, socket and DNS names and raw event
//! text are replaced by `[REDACTED:<rule>:<fingerprint>]` before anything is stored.
//!
//! Built-in rules are one table ([`BUILTINS`]); user rules from `[[redaction.rules]]` join it.
//! Nearly every string we see is a file path holding no secret, so a case-insensitive keyword
//! scan decides which regexes run at all, and a string without a keyword costs one pass and no
//! allocation. Spans found by all rules are resolved to non-overlapping ones (earliest start,
//! then longest, then the more specific rule) and replaced in one rebuild of the string.
//!
//! Records restored from saved state are run through the engine again, so the output must be a
//! fixed point: rules only ever see the text between existing tokens (never inside or across
//! one), and the rule names in existing tokens are reported as hits. The fingerprint is keyed,
//! so that equal secrets can be followed across events while a stored fingerprint cannot be
//! checked against a dictionary of likely passwords.

use std::fmt::Write as _;

use aho_corasick::AhoCorasick;
use hmac::{Hmac, Mac};
use regex::{Captures, Regex};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

/// One user rule from the config file (`[[redaction.rules]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub name: String,
    pub pattern: String,
    #[serde(default)]
    pub keywords: Vec<String>,
}

/// The `[redaction]` section of the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactConfig {
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// Regexes; a candidate secret that matches one of them (whole match) is left alone (false positives).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Names of built-in rules to turn off.
    #[serde(default)]
    pub disable: Vec<String>,
}

/// A configuration the engine cannot be built from. Regex errors are kept as their one-line
/// reason rather than a `#[source]`: their `Display` is a multi-line diagram.
#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    #[error("redaction rule `{name}` is not valid: {reason}")]
    InvalidRule { name: String, reason: String },
    #[error("redaction rule name `{name}` must be 1-40 characters of a-z, 0-9, _ and -")]
    BadName { name: String },
    #[error("redaction rule `{name}` is defined twice")]
    Duplicate { name: String },
    #[error("redaction allow pattern `{pattern}` is not valid: {reason}")]
    InvalidAllow { pattern: String, reason: String },
    #[error("cannot disable redaction rule `{name}`: there is no built-in rule by that name")]
    UnknownDisable { name: String },
    #[error("cannot build the redaction keyword matcher")]
    Keywords {
        #[source]
        source: aho_corasick::BuildError,
    },
}

/// The rule names found in one record, sorted and deduplicated.
pub type Hits = std::collections::BTreeSet<String>;

/// Extra test on a built-in rule's match, for what a regex without look-around cannot say.
type Check = fn(&Captures<'_>) -> bool;

/// One built-in rule shape. Entries may share a name: one rule, several shapes.
struct Builtin {
    name: &'static str,
    /// Lowercase; the pattern runs only on strings containing one of them.
    keywords: &'static [&'static str],
    /// A group named `secret` is the part replaced; without one, the whole match.
    pattern: &'static str,
    /// Breaks ties between spans that start and end together: a vendor format is more
    /// telling than "the value of something named TOKEN".
    rank: u8,
    check: Option<Check>,
}

/// Ranks, least specific first. `PREFIX` is for a format inside another's (`sk-ant-` in `sk-`).
const GENERIC: u8 = 0;
const CONTEXT: u8 = 1;
const VENDOR: u8 = 2;
const PREFIX: u8 = 3;

/// Words that make a variable or flag name secret-ish; [`is_secret_name`] decides precisely.
macro_rules! name_word {
    () => {
        "(?:pass|pwd|token|secret|api[_-]?key|access[_-]?key|private[_-]?key|credential|auth)"
    };
}
/// A value: quoted (the quotes are kept, see [`Redactor::scan`]; a cut-off quote runs to the end)
/// or up to whitespace or a quote.
macro_rules! value {
    () => {
        r#"(?P<secret>"[^"]*"?|'[^']*'?|[^\s'"]+)"#
    };
}
const NAME_KEYWORDS: &[&str] = &[
    "pass",
    "pwd",
    "token",
    "secret",
    "api_key",
    "api-key",
    "apikey",
    "access_key",
    "access-key",
    "accesskey",
    "private_key",
    "private-key",
    "privatekey",
    "credential",
    "auth",
];

// `(?-u:\b)` rather than `\b`: the lazy DFA cannot do Unicode word boundaries on non-ASCII text.
const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "private_key",
        keywords: &["-----begin"],
        rank: PREFIX,
        check: None,
        pattern: r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?P<secret>(?s:.*?))(?:-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\z)",
    },
    Builtin {
        name: "aws_access_key",
        keywords: &["akia", "asia", "agpa", "aida", "aroa", "anpa", "anva", "aipa"],
        rank: VENDOR,
        check: None,
        pattern: r"(?-u:\b)(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}(?-u:\b)",
    },
    Builtin {
        name: "github_token",
        keywords: &["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"],
        rank: VENDOR,
        check: None,
        pattern: r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})",
    },
    Builtin {
        name: "gitlab_token",
        keywords: &["glpat-", "gldt-", "glrt-", "glptt-"],
        rank: VENDOR,
        check: None,
        pattern: r"(?-u:\b)gl(?:pat|dt|rt|ptt)-[A-Za-z0-9_-]{20,}",
    },
    Builtin {
        name: "slack_token",
        keywords: &["xox"],
        rank: VENDOR,
        check: None,
        pattern: r"(?-u:\b)xox[abposr]-[A-Za-z0-9-]{10,}",
    },
    Builtin {
        name: "slack_token",
        keywords: &["hooks.slack.com"],
        rank: VENDOR,
        check: None,
        pattern: r"hooks\.slack\.com/services/(?P<secret>[A-Za-z0-9_/-]{20,})",
    },
    Builtin {
        name: "anthropic_api_key",
        keywords: &["sk-ant-"],
        rank: PREFIX,
        check: None,
        pattern: r"(?-u:\b)sk-ant-[A-Za-z0-9_-]{20,}",
    },
    Builtin {
        name: "openai_api_key",
        keywords: &["sk-"],
        rank: VENDOR,
        check: Some(not_slug),
        pattern: r"(?-u:\b)sk-[A-Za-z0-9_-]{20,}",
    },
    Builtin {
        name: "google_api_key",
        keywords: &["aiza"],
        rank: VENDOR,
        check: None,
        pattern: r"(?-u:\b)AIza[A-Za-z0-9_-]{35}",
    },
    Builtin {
        name: "stripe_key",
        keywords: &["sk_live_", "sk_test_", "rk_live_", "rk_test_"],
        rank: VENDOR,
        check: None,
        pattern: r"(?-u:\b)[rs]k_(?:live|test)_[A-Za-z0-9]{16,}",
    },
    Builtin {
        name: "jwt",
        keywords: &["eyj"],
        rank: VENDOR,
        check: None,
        pattern: r"(?-u:\b)eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
    },
    // The password runs to the last `@` before the host, so an unescaped `@` in it is covered.
    Builtin {
        name: "url_password",
        keywords: &["://"],
        rank: CONTEXT,
        check: None,
        pattern: r#"(?i)(?-u:\b)[a-z][a-z0-9+.-]*://[^\s:/?#@'"]*:(?P<secret>[^\s/?#'"]+)@"#,
    },
    Builtin {
        name: "authorization",
        keywords: &["authorization"],
        rank: CONTEXT,
        check: Some(not_scheme),
        pattern: r#"(?i)authorization["']?[ \t]*[:=][ \t]*["']?(?:[a-z][a-z0-9_-]*[ \t]+)?(?P<secret>[^\s'"]+)"#,
    },
    Builtin {
        name: "authorization",
        keywords: &["bearer"],
        rank: CONTEXT,
        check: Some(not_word),
        pattern: r#"(?i)(?-u:\b)bearer[ \t]+(?P<secret>[^\s'"]{8,})"#,
    },
    Builtin {
        name: "password_flag",
        keywords: NAME_KEYWORDS,
        rank: CONTEXT,
        check: Some(secret_name),
        pattern: concat!(r"(?i)--(?P<name>[a-z0-9_-]*", name_word!(), r"[a-z0-9_-]*)=", value!()),
    },
    // With a space, a value starting `--` is the next flag, and `-` alone means stdin.
    Builtin {
        name: "password_flag",
        keywords: NAME_KEYWORDS,
        rank: CONTEXT,
        check: Some(secret_name),
        pattern: concat!(
            r"(?i)--(?P<name>[a-z0-9_-]*",
            name_word!(),
            r#"[a-z0-9_-]*)[ \t]+(?P<secret>"[^"]*"?|'[^']*'?|(?:[^\s'"-]|-[^\s'"-])[^\s'"]*)"#
        ),
    },
    // Case-sensitive: `-P3306` is a port. A bare `-p` prompts and has no value to find.
    Builtin {
        name: "mysql_password",
        keywords: &["mysql", "mariadb"],
        rank: CONTEXT,
        check: None,
        pattern: concat!(
            r"(?-u:\b)(?:mysql|mysqldump|mysqladmin|mysqlsh|mariadb|mariadb-dump)(?-u:\b)[^\n;&|]*?[ \t]-p",
            value!()
        ),
    },
    Builtin {
        name: "sshpass",
        keywords: &["sshpass"],
        rank: CONTEXT,
        check: None,
        pattern: concat!(r"(?-u:\b)sshpass(?:[ \t]+-[fdP][ \t]*\S+|[ \t]+-[evhV]+)*[ \t]+-p[ \t]*", value!()),
    },
    Builtin {
        name: "secret_assignment",
        keywords: NAME_KEYWORDS,
        rank: GENERIC,
        check: Some(secret_name),
        pattern: concat!(
            r"(?i)(?-u:\b)(?P<name>[a-z0-9_]*",
            name_word!(),
            r#"[a-z0-9_]*)=(?P<secret>"[^"]*"?|'[^']*'?|[^\s;&|'"]+)"#
        ),
    },
    Builtin {
        name: "secret_assignment",
        keywords: NAME_KEYWORDS,
        rank: GENERIC,
        check: Some(secret_name),
        pattern: concat!(
            r#"(?i)"(?P<name>[a-z0-9_.-]*"#,
            name_word!(),
            r#"[a-z0-9_.-]*)"[ \t]*:[ \t]*"(?P<secret>[^"]+)""#
        ),
    },
];

const MYSQL_PROGRAMS: &[&str] = &["mysql", "mysqldump", "mysqladmin", "mariadb", "mariadb-dump", "mysqlsh"];
const TOKEN_OPEN: &str = "[REDACTED:";
/// `:` + 12 hex digits + `]`.
const TOKEN_TAIL: usize = 14;
/// Keyword pattern 0 finds earlier tokens; it switches no rule on.
const MARKER: usize = 0;

/// Whether a variable or flag name says its value is a credential. Whole parts matter for the
/// short words: `DB_PASS` and `GITHUB_TOKEN` are secrets, `BYPASS_CACHE`, `MAX_TOKENS`,
/// `GIT_AUTHOR_NAME` and the shell's `PWD` are not; a `_FILE`/`-path`… suffix names where the
/// secret lives, not the secret, and `--no-password`/`--ask-pass` are switches without a value.
fn is_secret_name(name: &str) -> bool {
    const ANYWHERE: &[&str] = &[
        "password",
        "passwd",
        "passphrase",
        "secret",
        "apikey",
        "api_key",
        "api-key",
        "accesskey",
        "access_key",
        "access-key",
        "privatekey",
        "private_key",
        "private-key",
        "credential",
    ];
    const NOT_THE_VALUE: &[&str] = &["file", "path", "dir", "env", "stdin", "fd", "cmd", "command", "url"];
    let mut parts = name.split(['_', '-', '.']).filter(|p| !p.is_empty());
    let first = parts.clone().next().is_some_and(|f| f.eq_ignore_ascii_case("no") || f.eq_ignore_ascii_case("ask"));
    if first || parts.clone().next_back().is_some_and(|l| NOT_THE_VALUE.iter().any(|n| l.eq_ignore_ascii_case(n))) {
        return false;
    }
    let contains = |word: &str| name.as_bytes().windows(word.len()).any(|w| w.eq_ignore_ascii_case(word.as_bytes()));
    ANYWHERE.iter().any(|w| contains(w))
        || parts.any(|p| {
            p.eq_ignore_ascii_case("pass")
                || p.eq_ignore_ascii_case("auth")
                || (p.eq_ignore_ascii_case("pwd") && p.len() < name.len())
                || p.len() >= 5 && p.as_bytes()[p.len() - 5..].eq_ignore_ascii_case(b"token")
        })
}

fn secret_name(c: &Captures<'_>) -> bool {
    c.name("name").is_some_and(|n| is_secret_name(n.as_str()))
}

/// `sk-learn-tutorial-examples` is a file name, not a key: real keys are mixed-case random text.
fn not_slug(c: &Captures<'_>) -> bool {
    let body = &c[0][3..];
    let body = ["proj-", "svcacct-", "admin-"].iter().find_map(|p| body.strip_prefix(p)).unwrap_or(body);
    !(body.contains('-') && body.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
}

/// `Authorization: Bearer` with nothing after it has no credential, only its scheme.
fn not_scheme(c: &Captures<'_>) -> bool {
    let schemes = ["bearer", "basic", "token", "digest", "negotiate"];
    c.name("secret").is_some_and(|s| !schemes.iter().any(|w| s.as_str().eq_ignore_ascii_case(w)))
}

/// Prose ("bearer authentication") is short letters only; a token has digits or punctuation or length.
fn not_word(c: &Captures<'_>) -> bool {
    c.name("secret").is_some_and(|s| s.len() >= 20 || !s.as_str().bytes().all(|b| b.is_ascii_alphabetic()))
}

fn is_secret_flag(arg: &str) -> bool {
    arg.strip_prefix("--").is_some_and(|n| {
        !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') && is_secret_name(n)
    })
}

/// The first line of a regex error that says what is wrong.
fn reason(e: &regex::Error) -> String {
    let text = e.to_string();
    let line = text.lines().find_map(|l| l.strip_prefix("error: ")).or_else(|| text.lines().next());
    line.unwrap_or_default().to_owned()
}

fn compile(name: &str, pattern: &str) -> Result<Regex, RedactError> {
    Regex::new(pattern).map_err(|e| RedactError::InvalidRule { name: name.to_owned(), reason: reason(&e) })
}

fn add_hit(hits: &mut Hits, name: &str) {
    if !hits.contains(name) {
        hits.insert(name.to_owned());
    }
}

struct Rule {
    name: String,
    regex: Regex,
    secret: Option<usize>,
    check: Option<Check>,
    rank: u8,
}

/// A span of the string to replace, found by `rule`.
struct Span {
    start: usize,
    end: usize,
    rule: usize,
}

/// Which of the argv-only rules (a secret in the element after its flag) are on.
struct ArgvRules {
    password_flag: bool,
    mysql: bool,
    sshpass: bool,
}

/// The compiled rules and the fingerprint key; built once at start-up, shared by reference.
pub struct Redactor {
    mac: Hmac<Sha256>,
    rules: Vec<Rule>,
    keywords: AhoCorasick,
    /// For each keyword pattern, the rules it switches on.
    keyword_rules: Vec<Vec<usize>>,
    /// Rules without keywords: they run on every string.
    always: Vec<usize>,
    token: Regex,
    allow: Vec<Regex>,
    names: Vec<String>,
    argv_rules: ArgvRules,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor").field("rules", &self.names).finish_non_exhaustive()
    }
}

impl Redactor {
    /// `key` is the per-installation fingerprint key (32 random bytes from the state directory).
    pub fn new(key: &[u8], cfg: &RedactConfig) -> Result<Self, RedactError> {
        if let Some(name) = cfg.disable.iter().find(|d| !BUILTINS.iter().any(|b| b.name == d.as_str())) {
            return Err(RedactError::UnknownDisable { name: name.clone() });
        }
        let mut rules = Vec::new();
        let mut rule_keywords: Vec<Vec<String>> = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for b in BUILTINS.iter().filter(|b| !cfg.disable.iter().any(|d| d == b.name)) {
            let regex = compile(b.name, b.pattern)?;
            let secret = regex.capture_names().position(|n| n == Some("secret"));
            rules.push(Rule { name: b.name.to_owned(), regex, secret, check: b.check, rank: b.rank });
            rule_keywords.push(b.keywords.iter().map(|k| (*k).to_owned()).collect());
            if !names.iter().any(|n| n == b.name) {
                names.push(b.name.to_owned());
            }
        }
        let active = |name: &str| names.iter().any(|n| n == name);
        let argv_rules = ArgvRules {
            password_flag: active("password_flag"),
            mysql: active("mysql_password"),
            sshpass: active("sshpass"),
        };
        for spec in &cfg.rules {
            let name = &spec.name;
            let valid = (1..=40).contains(&name.len())
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
            if !valid {
                return Err(RedactError::BadName { name: name.clone() });
            }
            // A disabled built-in's name is free, for a user rule that replaces it.
            if names.contains(name) {
                return Err(RedactError::Duplicate { name: name.clone() });
            }
            let regex = compile(name, &spec.pattern)?;
            let secret = regex.capture_names().position(|n| n == Some("secret"));
            // Someone wrote it for their own secrets' format: as telling as a vendor's.
            rules.push(Rule { name: name.clone(), regex, secret, check: None, rank: VENDOR });
            rule_keywords
                .push(spec.keywords.iter().filter(|k| !k.is_empty()).map(|k| k.to_ascii_lowercase()).collect());
            names.push(name.clone());
        }
        let allow = cfg
            .allow
            .iter()
            .map(|p| {
                Regex::new(&format!(r"\A(?:{p})\z"))
                    .map_err(|e| RedactError::InvalidAllow { pattern: p.clone(), reason: reason(&e) })
            })
            .collect::<Result<_, _>>()?;

        let mut patterns = vec![TOKEN_OPEN.to_ascii_lowercase()];
        let mut keyword_rules: Vec<Vec<usize>> = vec![Vec::new()];
        let mut always = Vec::new();
        for (rule, keywords) in rule_keywords.into_iter().enumerate() {
            if keywords.is_empty() {
                always.push(rule);
            }
            for k in keywords {
                let id = patterns.iter().position(|p| *p == k).unwrap_or_else(|| {
                    patterns.push(k);
                    keyword_rules.push(Vec::new());
                    patterns.len() - 1
                });
                keyword_rules[id].push(rule);
            }
        }
        let keywords = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(&patterns)
            .map_err(|source| RedactError::Keywords { source })?;
        let token = compile("token", r"\[REDACTED:[a-z0-9_-]{1,40}:[0-9a-f]{12}\]")?;
        // HMAC takes keys of any length (long ones are hashed), so this cannot fail.
        let mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
        Ok(Self { mac, rules, keywords, keyword_rules, always, token, allow, names, argv_rules })
    }

    /// The keyword prefilter: false means no rule can match `s` and it holds no earlier token.
    pub fn is_candidate(&self, s: &str) -> bool {
        !self.always.is_empty() || self.keywords.is_match(s)
    }

    /// Replace every secret in `s` in place; adds the rule names to `hits`. Returns true if it changed anything.
    pub fn text(&self, s: &mut String, hits: &mut Hits) -> bool {
        // Most strings hold no keyword: answer them with the cheapest search there is.
        if !self.is_candidate(s) {
            return false;
        }
        // A token can give its neighbour a word boundary it did not have, so a second run could
        // find more: repeat until nothing changes, so that what is stored is a fixed point. Each
        // round turns secret text into tokens, which are never matched again, so this ends soon.
        let mut changed = false;
        for _ in 0..8 {
            if !self.text_round(s, hits) {
                break;
            }
            changed = true;
        }
        changed
    }

    fn text_round(&self, s: &mut String, hits: &mut Hits) -> bool {
        // A bit per rule, inline for any realistic rule count so the fast path does not allocate.
        let mut inline = [0u64; 4];
        let mut heap;
        let words = self.rules.len().div_ceil(64);
        let on: &mut [u64] = if words <= inline.len() {
            &mut inline[..words]
        } else {
            heap = vec![0; words];
            &mut heap
        };
        let (mut any_rule, mut saw_token) = (!self.always.is_empty(), false);
        for &r in &self.always {
            on[r / 64] |= 1 << (r % 64);
        }
        for m in self.keywords.find_overlapping_iter(s.as_str()) {
            let id = m.pattern().as_usize();
            saw_token |= id == MARKER;
            for &r in &self.keyword_rules[id] {
                on[r / 64] |= 1 << (r % 64);
                any_rule = true;
            }
        }
        if !any_rule && !saw_token {
            return false;
        }
        let mut found = Vec::new();
        let mut from = 0;
        if saw_token {
            for t in self.token.find_iter(s) {
                self.scan(&s[from..t.start()], from, on, &mut found);
                add_hit(hits, &s[t.start() + TOKEN_OPEN.len()..t.end() - TOKEN_TAIL]);
                from = t.end();
            }
        }
        self.scan(&s[from..], from, on, &mut found);
        if found.is_empty() {
            return false;
        }
        found.sort_unstable_by(|x, y| {
            (x.start, y.end, self.rules[y.rule].rank, x.rule).cmp(&(y.start, x.end, self.rules[x.rule].rank, y.rule))
        });
        let mut out = String::with_capacity(s.len() + 40 * found.len());
        let mut done = 0;
        for f in &found {
            if f.start < done {
                continue;
            }
            out.push_str(&s[done..f.start]);
            let name = &self.rules[f.rule].name;
            self.push_token(&mut out, name, &s[f.start..f.end]);
            add_hit(hits, name);
            done = f.end;
        }
        out.push_str(&s[done..]);
        *s = out;
        true
    }

    /// Collect the spans the switched-on rules find in `seg` (text between tokens at `base`).
    fn scan(&self, seg: &str, base: usize, on: &[u64], found: &mut Vec<Span>) {
        if seg.is_empty() {
            return;
        }
        for (i, rule) in self.rules.iter().enumerate().filter(|(i, _)| on[i / 64] & (1 << (i % 64)) != 0) {
            for m in rule.regex.find_iter(seg) {
                let (mut a, mut b) = (m.start(), m.end());
                if rule.secret.is_some() || rule.check.is_some() {
                    let Some(caps) = rule.regex.captures_at(seg, a) else { continue };
                    if rule.check.is_some_and(|check| !check(&caps)) {
                        continue;
                    }
                    match rule.secret.map(|g| caps.get(g)) {
                        Some(Some(g)) => (a, b) = (g.start(), g.end()),
                        Some(None) => continue,
                        None => {}
                    }
                }
                // A quoted value keeps its quotes, so the shell line still reads right.
                let bytes = seg.as_bytes();
                if a < b && matches!(bytes[a], b'"' | b'\'') {
                    (a, b) = (a + 1, if b - a >= 2 && bytes[b - 1] == bytes[a] { b - 1 } else { b });
                }
                if a < b && !self.allow.iter().any(|r| r.is_match(&seg[a..b])) {
                    found.push(Span { start: base + a, end: base + b, rule: i });
                }
            }
        }
    }

    /// An argv: applies `text` to every element, plus the rules that span two elements.
    pub fn argv(&self, argv: &mut [String], hits: &mut Hits) -> bool {
        if !argv.iter().any(|a| self.is_candidate(a)) {
            return false;
        }
        let mut changed = false;
        for i in 0..argv.len() {
            let (head, tail) = argv.split_at_mut(i + 1);
            let arg = head[i].as_str();
            let program = arg.rsplit('/').next().unwrap_or(arg);
            if self.argv_rules.password_flag && is_secret_flag(arg) {
                if let Some(value) = tail.first_mut().filter(|v| v.as_str() != "-" && !v.starts_with("--")) {
                    changed |= self.replace_after(value, "", "password_flag", hits);
                }
            }
            if self.argv_rules.sshpass && program == "sshpass" {
                changed |= self.sshpass_args(tail, hits);
            }
            if self.argv_rules.mysql && MYSQL_PROGRAMS.contains(&program) {
                for a in tail.iter_mut() {
                    changed |= self.replace_after(a, "-p", "mysql_password", hits);
                }
            }
        }
        for a in argv.iter_mut() {
            changed |= self.text(a, hits);
        }
        changed
    }

    /// sshpass's own options come before the command it runs; `-p` there takes the password.
    fn sshpass_args(&self, args: &mut [String], hits: &mut Hits) -> bool {
        let mut j = 0;
        while j < args.len() {
            let a = args[j].as_str();
            if a == "-p" {
                return args.get_mut(j + 1).is_some_and(|v| self.replace_after(v, "", "sshpass", hits));
            }
            if a.starts_with("-p") {
                return self.replace_after(&mut args[j], "-p", "sshpass", hits);
            }
            if !a.starts_with('-') {
                return false;
            }
            j += if matches!(a, "-f" | "-d" | "-P") { 2 } else { 1 };
        }
        false
    }

    /// Replace what follows `prefix` in a whole argv element, unless it is empty, allowed or
    /// already (partly) redacted.
    fn replace_after(&self, arg: &mut String, prefix: &str, rule: &str, hits: &mut Hits) -> bool {
        let Some(secret) = arg.strip_prefix(prefix) else { return false };
        if secret.is_empty() || secret.contains(TOKEN_OPEN) || self.allow.iter().any(|r| r.is_match(secret)) {
            return false;
        }
        let mut out = String::with_capacity(prefix.len() + 40);
        out.push_str(prefix);
        self.push_token(&mut out, rule, secret);
        *arg = out;
        add_hit(hits, rule);
        true
    }

    /// Walk a JSON value: every string goes through `text`; every array whose elements are all
    /// strings is treated as an argv (`argv`); object keys are left alone.
    pub fn json(&self, v: &mut Value, hits: &mut Hits) -> bool {
        match v {
            Value::String(s) => self.text(s, hits),
            Value::Array(items) if items.iter().all(Value::is_string) => {
                if !items.iter().filter_map(Value::as_str).any(|s| self.is_candidate(s)) {
                    return false;
                }
                let mut args: Vec<String> = items
                    .iter_mut()
                    .filter_map(|x| if let Value::String(s) = x { Some(std::mem::take(s)) } else { None })
                    .collect();
                let changed = self.argv(&mut args, hits);
                for (item, a) in items.iter_mut().zip(args) {
                    *item = Value::String(a);
                }
                changed
            }
            Value::Array(items) => items.iter_mut().fold(false, |c, x| self.json(x, hits) | c),
            Value::Object(map) => map.values_mut().fold(false, |c, x| self.json(x, hits) | c),
            _ => false,
        }
    }

    /// The keyed fingerprint of a secret: the first 12 lowercase hex digits of HMAC-SHA256(key, secret).
    pub fn fingerprint(&self, secret: &str) -> String {
        let mut out = String::with_capacity(12);
        self.push_fingerprint(&mut out, secret);
        out
    }

    fn push_fingerprint(&self, out: &mut String, secret: &str) {
        let mut mac = self.mac.clone();
        mac.update(secret.as_bytes());
        for b in &mac.finalize().into_bytes()[..6] {
            let _ = write!(out, "{b:02x}");
        }
    }

    fn push_token(&self, out: &mut String, rule: &str, secret: &str) {
        out.push_str(TOKEN_OPEN);
        out.push_str(rule);
        out.push(':');
        self.push_fingerprint(out, secret);
        out.push(']');
    }

    /// Names of the active rules (built-in minus disabled, plus user rules), for the startup log.
    pub fn rule_names(&self) -> Vec<String> {
        self.names.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = &[7; 32];
    const GHP: &str = "ghp_0123456789abcdefghijklmnopqrstuvwxyz";
    const ANT: &str = "sk-ant-api03-Abcdefghij0123456789Abcdefghij0123456789AbcDEF";
    const AWS: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn engine() -> &'static Redactor {
        static R: std::sync::OnceLock<Redactor> = std::sync::OnceLock::new();
        R.get_or_init(|| Redactor::new(KEY, &RedactConfig::default()).expect("built-in rules"))
    }

    fn tok(rule: &str, secret: &str) -> String {
        format!("[REDACTED:{rule}:{}]", engine().fingerprint(secret))
    }

    fn text(s: &str) -> (String, Vec<String>) {
        let (mut s, mut hits) = (s.to_owned(), Hits::new());
        engine().text(&mut s, &mut hits);
        (s, hits.into_iter().collect())
    }

    fn argv(args: &[&str]) -> (Vec<String>, Vec<String>) {
        let (mut v, mut hits) = (args.iter().map(|&a| a.to_owned()).collect::<Vec<_>>(), Hits::new());
        engine().argv(&mut v, &mut hits);
        (v, hits.into_iter().collect())
    }

    #[test]
    fn each_builtin_rule_redacts_only_the_secret() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLWZha2U";
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEfake\n-----END RSA PRIVATE KEY-----";
        let cases = [
            ("aws_access_key", "aws configure set aws_access_key_id AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
            ("github_token", &format!("git push {GHP}"), GHP),
            ("github_token", &format!("/tmp/{GHP}/x"), GHP),
            (
                "github_token",
                "x github_pat_11ABCDEFG0123456789_abcdefghij y",
                "github_pat_11ABCDEFG0123456789_abcdefghij",
            ),
            ("gitlab_token", "glpat-xxxxxxxxxxxxxxxxxxxx1", "glpat-xxxxxxxxxxxxxxxxxxxx1"),
            ("slack_token", "xoxb-1234567890-abcdefABCDEF", "xoxb-1234567890-abcdefABCDEF"),
            (
                "slack_token",
                "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXX",
                "T000/B000/XXXXXXXXXXXXXXXX",
            ),
            ("anthropic_api_key", ANT, ANT),
            ("openai_api_key", "sk-proj-Abc123def456ghi789jkl012mno345", "sk-proj-Abc123def456ghi789jkl012mno345"),
            (
                "google_api_key",
                "key=AIzaSyA-1234567890abcdefghijklmnopqrstu",
                "AIzaSyA-1234567890abcdefghijklmnopqrstu",
            ),
            ("stripe_key", "sk_live_0123456789abcdefABCD", "sk_live_0123456789abcdefABCD"),
            ("jwt", &format!("cookie: session={jwt}; x"), jwt),
            ("private_key", &format!("echo '{pem}' > k"), "\nMIIEfake\n"),
            ("private_key", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNz", "\nb3BlbnNz"),
            ("url_password", "psql postgres://u:pw@h/db", "pw"),
            ("url_password", "redis://:p@ss@cache:6379/0", "p@ss"),
            ("authorization", "curl -H 'Authorization: Bearer abc.def-123456' x", "abc.def-123456"),
            ("authorization", "Proxy-Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
            ("authorization", "got bearer Zm9vYmFy0123 back", "Zm9vYmFy0123"),
            ("authorization", r#"{"Authorization": "Basic dXNlcjpwYXNz"}"#, "dXNlcjpwYXNz"),
            ("password_flag", "app --password=hunter2 --verbose", "hunter2"),
            ("password_flag", "bash -c 'mysql --password hunter2'", "hunter2"),
            ("password_flag", "tool --API-KEY \"a b\"", "a b"),
            ("mysql_password", "/usr/bin/mysql -uroot -pS3cret db", "S3cret"),
            ("sshpass", "sshpass -p pw ssh host", "pw"),
            ("sshpass", "sshpass -e -ppw ssh host", "pw"),
            ("secret_assignment", &format!("AWS_SECRET_ACCESS_KEY={AWS} aws s3 ls"), AWS),
            ("secret_assignment", "export DB_PASS=abc; make", "abc"),
            ("secret_assignment", "PASSWORD='x y' ./run", "x y"),
            ("secret_assignment", "TOKEN=\"cut off", "cut off"),
            ("secret_assignment", r#"{"client_secret": "s3cr3t"}"#, "s3cr3t"),
        ];
        for (rule, input, secret) in cases {
            assert_eq!(text(input), (input.replacen(secret, &tok(rule, secret), 1), vec![rule.to_owned()]), "{input}");
        }
        assert_eq!(engine().rule_names().len(), 16);
    }

    #[test]
    fn near_misses_are_left_alone() {
        for s in [
            "da39a3ee5e6b4b0d3255bfef95601890afd80709 3f2a9c1 f47ac10b-58cc-4372-a567-0e02b2c3d479",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "/home/u/tokens/list.txt /srv/secret-santa/index.html /usr/share/doc/password-store/README",
            "app --password-file=/etc/x --token-file /run/x; docker login --password-stdin -u me",
            "PASSWORD_FILE=/run/secrets/db TOKEN= GIT_AUTHOR_NAME=me BYPASS_CACHE=1 MAX_TOKENS=4096 PWD=/x",
            "pip install sk-learn risk-free task-1 /tmp/sk-learn-tutorial-examples-2024",
            "https://user@host/x https://host:8443/x postgres://postgres@localhost/db?host=/tmp",
            "Authorization is required; the bearer of bad news; Bearer",
            "Authorization: Bearer",
            "/usr/lib/x86_64-linux-gnu/libssl.so.3 AKIAabcdefghijklmnop AKIA1234",
            "eyJmb28iOiJiYXIifQ== eyJhbGciOiJIUzI1NiJ9",
            "mysql -uroot -p db; mysql -P3306 -h host; ssh -p 22 host",
        ] {
            assert_eq!(text(s), (s.to_owned(), vec![]), "{s}");
        }
        for args in [
            &["mkdir", "-p", "/tmp/x"][..],
            &["ssh", "-p", "22", "host"],
            &["grep", "-p"],
            &["tar", "-xzf", "f"],
            &["mysql", "-p"],
            &["app", "--token-file", "/run/x"],
            &["app", "--password", "--user"],
            &["pg_dump", "--no-password", "db"],
            &["ansible-playbook", "--ask-vault-pass", "site.yml"],
        ] {
            assert_eq!(argv(args), (args.iter().map(|&a| a.to_owned()).collect(), vec![]), "{args:?}");
        }
    }

    #[test]
    fn argv_cases() {
        let (v, hits) = argv(&["curl", "-H", "Authorization: Bearer abc.def-123456"]);
        assert_eq!(
            (v[2].clone(), hits),
            (format!("Authorization: Bearer {}", tok("authorization", "abc.def-123456")), vec!["authorization".into()])
        );
        let (v, _) = argv(&["bash", "-c", &format!("AWS_SECRET_ACCESS_KEY={AWS} aws s3 ls")]);
        assert_eq!(v[2], format!("AWS_SECRET_ACCESS_KEY={} aws s3 ls", tok("secret_assignment", AWS)));
        let (v, _) = argv(&["env", &format!("AWS_SECRET_ACCESS_KEY={AWS}"), "aws", "s3", "ls"]);
        assert_eq!(v[1], format!("AWS_SECRET_ACCESS_KEY={}", tok("secret_assignment", AWS)));
        let (v, hits) = argv(&["git", "push", GHP, ANT]);
        assert_eq!(
            (&v[2..], hits),
            (
                &[tok("github_token", GHP), tok("anthropic_api_key", ANT)][..],
                vec!["anthropic_api_key".into(), "github_token".into()]
            )
        );
        let (v, hits) = argv(&["mysql", "--password", "hunter2"]);
        assert_eq!((v[2].clone(), hits), (tok("password_flag", "hunter2"), vec!["password_flag".into()]));
        let (v, hits) = argv(&["sshpass", "-p", "pw", "ssh", "-p", "22", "host"]);
        assert_eq!(
            (v, hits),
            (
                vec![
                    "sshpass".into(),
                    "-p".into(),
                    tok("sshpass", "pw"),
                    "ssh".into(),
                    "-p".into(),
                    "22".into(),
                    "host".into()
                ],
                vec!["sshpass".into()]
            )
        );
        let (v, hits) = argv(&["/usr/bin/mysql", "-uroot", "-pS3cret", "db"]);
        assert_eq!(
            (v[2].clone(), hits),
            (format!("-p{}", tok("mysql_password", "S3cret")), vec!["mysql_password".into()])
        );
    }

    #[test]
    fn the_specific_rule_wins_and_replaces_once() {
        let (s, hits) = text(&format!("export GITHUB_TOKEN={GHP}; Authorization: Bearer {ANT}"));
        assert_eq!(
            s,
            format!(
                "export GITHUB_TOKEN={}; Authorization: Bearer {}",
                tok("github_token", GHP),
                tok("anthropic_api_key", ANT)
            )
        );
        assert_eq!(hits, ["anthropic_api_key", "github_token"]);
    }

    #[test]
    fn fingerprints_are_keyed_and_stable() {
        let r = engine();
        assert_eq!(r.fingerprint("hunter2"), r.fingerprint("hunter2"));
        assert_ne!(r.fingerprint("hunter2"), r.fingerprint("hunter3"));
        let other = Redactor::new(&[8; 32], &RedactConfig::default()).expect("rules");
        assert_ne!(r.fingerprint("hunter2"), other.fingerprint("hunter2"));
        assert!(
            r.fingerprint("x").bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                && r.fingerprint("x").len() == 12
        );
        let (s, _) = text("A_TOKEN=hunter2 --pass hunter2");
        assert_eq!(s.matches(&r.fingerprint("hunter2")).count(), 2);
    }

    #[test]
    fn a_second_pass_changes_nothing_and_reports_the_same_hits() {
        let r = engine();
        let mut s = format!(
            "DB_PASSWORD=\"pw\" mysql -pS3cret; curl -H 'Authorization: Bearer abc.def-123456' https://u:p@h/{GHP} \
             -----BEGIN EC PRIVATE KEY-----\nxyz\n-----END EC PRIVATE KEY----- sshpass -p pw2 ssh h --token x"
        );
        let (mut hits1, mut hits2) = (Hits::new(), Hits::new());
        assert!(r.text(&mut s, &mut hits1));
        let mut again = s.clone();
        assert!(!r.text(&mut again, &mut hits2));
        assert_eq!((again, hits2.len()), (s, 8));
        assert_eq!(hits1, hits2);
        let mut v: Vec<String> = ["mysql", "--password", "x", "-pS3cret"].map(String::from).to_vec();
        let (mut hits1, mut hits2) = (Hits::new(), Hits::new());
        assert!(r.argv(&mut v, &mut hits1));
        let once = v.clone();
        assert!(!r.argv(&mut v, &mut hits2));
        assert_eq!((v, hits2), (once, hits1));
        let stored = "DB_PASSWORD=[REDACTED:secret_assignment:0123456789ab]";
        assert_eq!(text(stored), (stored.to_owned(), vec!["secret_assignment".into()]));
    }

    #[test]
    fn user_rules_allowlist_and_disable() {
        let rule = |name: &str, pattern: &str, kw: &[&str]| RuleSpec {
            name: name.into(),
            pattern: pattern.into(),
            keywords: kw.iter().map(|&k| k.into()).collect(),
        };
        let cfg = RedactConfig {
            rules: vec![
                rule("acme_id", "ACME-[0-9]{6}", &["acme-"]),
                rule("session", "sid=(?P<secret>[0-9a-f]{8})", &[]),
            ],
            allow: vec!["hunter2".into(), "AKIA[A-Z0-9]*EXAMPLE".into()],
            disable: vec!["jwt".into()],
        };
        let r = Redactor::new(KEY, &cfg).expect("valid config");
        assert!(
            r.rule_names().ends_with(&["acme_id".into(), "session".into()]) && !r.rule_names().contains(&"jwt".into())
        );
        assert!(r.is_candidate("/usr/lib"), "a rule without keywords runs on everything");
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl";
        let (mut s, mut hits) =
            (format!("acme-1 ACME-123456 sid=deadbeef --password hunter2 AKIAIOSFODNN7EXAMPLE {jwt}"), Hits::new());
        assert!(r.text(&mut s, &mut hits));
        let (acme, sid) = (r.fingerprint("ACME-123456"), r.fingerprint("deadbeef"));
        assert_eq!(s, format!("acme-1 [REDACTED:acme_id:{acme}] sid=[REDACTED:session:{sid}] --password hunter2 AKIAIOSFODNN7EXAMPLE {jwt}"));
        assert_eq!(hits.into_iter().collect::<Vec<_>>(), ["acme_id", "session"]);

        let err = |rules: Vec<RuleSpec>, allow: &[&str], disable: &[&str]| {
            let cfg = RedactConfig {
                rules,
                allow: allow.iter().map(|&a| a.into()).collect(),
                disable: disable.iter().map(|&d| d.into()).collect(),
            };
            Redactor::new(KEY, &cfg).expect_err("must fail").to_string()
        };
        assert_eq!(
            err(vec![rule("my_rule", "(", &[])], &[], &[]),
            "redaction rule `my_rule` is not valid: unclosed group"
        );
        assert_eq!(
            err(vec![rule("Bad Name", "x", &[])], &[], &[]),
            "redaction rule name `Bad Name` must be 1-40 characters of a-z, 0-9, _ and -"
        );
        assert_eq!(
            err(vec![rule("x", "a", &[]), rule("x", "b", &[])], &[], &[]),
            "redaction rule `x` is defined twice"
        );
        assert_eq!(err(vec![rule("jwt", "a", &[])], &[], &[]), "redaction rule `jwt` is defined twice");
        assert_eq!(err(vec![], &["("], &[]), "redaction allow pattern `(` is not valid: unclosed group");
        assert_eq!(
            err(vec![], &[], &["nope"]),
            "cannot disable redaction rule `nope`: there is no built-in rule by that name"
        );
        assert!(
            serde_json::from_str::<RedactConfig>(r#"{"rules": [{"name": "a", "pattern": "b"}], "rulez": []}"#).is_err()
        );
    }

    #[test]
    fn json_walk() {
        let mut v = serde_json::json!({
            "argv": ["mysql", "-pS3cret"], "path": format!("/tmp/{GHP}/f"), "dns": {"queries": ["x.example"]}, "mixed": [1, "--token=abc"],
        });
        let mut hits = Hits::new();
        assert!(engine().json(&mut v, &mut hits));
        let want = serde_json::json!({
            "argv": ["mysql", format!("-p{}", tok("mysql_password", "S3cret"))], "path": format!("/tmp/{}/f", tok("github_token", GHP)),
            "dns": {"queries": ["x.example"]}, "mixed": [1, format!("--token={}", tok("password_flag", "abc"))],
        });
        assert_eq!(v, want);
        assert_eq!(hits.into_iter().collect::<Vec<_>>(), ["github_token", "mysql_password", "password_flag"]);
        assert!(!engine().is_candidate("/usr/lib/python3/dist-packages/foo/__init__.py"));
    }

    /// Relative cost of the fast path and of a hit: `cargo test --release -- --ignored --nocapture bench`.
    #[test]
    #[ignore = "benchmark"]
    fn bench_strings() {
        for input in [
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            "/home/u/.cache/pip/auth/x",
            "--token=abc123",
            "Authorization: Bearer abcdefgh123",
        ] {
            let start = std::time::Instant::now();
            for _ in 0..100_000 {
                engine().text(&mut input.to_owned(), &mut Hits::new());
            }
            println!("{:>8.0} ns  {input}", start.elapsed().as_secs_f64() * 1e4);
        }
    }
}
