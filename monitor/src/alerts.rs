//! Alert rules, evaluated in the daemon on every record as it flows (never by polling the
//! database): [`Engine::observe`] sees each record after redaction and before it is chained,
//! and returns the alerts to chain and store right after it. [`Engine::tick`] writes the
//! grouped repeats of a rule once its window has passed. Delivery (log, webhook) is in
//! `daemon/webhook.rs`.
//!
//! A rule has a name, a severity and a window, and matches records of some kinds (`file`,
//! `net`, `exec`, `tamper`, `action`) on their fields: agent, command, exe, path, access,
//! result, host, port, sensitive. The first match of a rule in a session is an alert at once;
//! further matches within the window are grouped into one row written when the window ends
//! (its `count` says how many, its `details.examples` which, the first [`MAX_EXAMPLES`]
//! distinct ones). `unlisted_host` alerts at once for each of the first [`MAX_DESTINATIONS`]
//! destinations of a session in a window. So a flood makes a bounded number of rows, and the
//! rows' counts add up to every match. Built-in rules (see [`BUILTIN`] and the three counting
//! rules `failure_spike`, `unusual_activity`, `unlisted_host`) can be turned off by name.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::{
    record::{AlertRecord, EventFacts, NetSummary, Output, WRITE_ACCESSES},
    sensitive::{glob_regex, Sensitive},
};

/// Ids of triggering actions and events kept per alert row.
pub const MAX_IDS: usize = 32;
/// Distinct matches a grouped row lists with their counts (`details.examples`); the rest are
/// counted in `details.others`.
pub const MAX_EXAMPLES: usize = 32;
/// `unlisted_host`: destinations of a session that get an alert at once within one window;
/// connects to further ones are counted in the session's grouped row.
pub const MAX_DESTINATIONS: usize = 32;
/// Action start times kept per agent for `unusual_activity` (16 bytes each).
const MAX_STARTS: usize = 200_000;

pub const SEVERITIES: &[&str] = &["info", "low", "medium", "high", "critical"];

pub fn severity_rank(s: &str) -> usize {
    SEVERITIES.iter().position(|x| *x == s).unwrap_or(0)
}

/// One value or a list of them, in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s.clone()],
            Self::Many(v) => v.clone(),
        }
    }
}

/// `[[alerts.rule]]`: a rule of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    /// info, low, medium (default), high or critical.
    pub severity: Option<String>,
    /// Repeats within it are grouped (default 5m).
    pub window: Option<String>,
    /// Record kinds: file, net, exec, tamper, action.
    pub on: OneOrMany,
    /// Glob on the session's agent name.
    pub agent: Option<String>,
    /// Regex searched in the command line (exec: argv joined by spaces; action: its command).
    pub command: Option<String>,
    /// Glob on the executable path (exec, action).
    pub exe: Option<String>,
    /// Path globs (file): `/…` the whole path, else the file name.
    pub path: Option<OneOrMany>,
    /// File accesses (read, write, create, delete, …, or `writes` for every modifying one).
    pub access: Option<OneOrMany>,
    /// Results: `ok`, an errno name, `denied` (EACCES, EPERM) or `failed` (anything but ok;
    /// for actions a non-zero exit or a signal).
    pub result: Option<OneOrMany>,
    /// Glob on the DNS name or address (net).
    pub host: Option<String>,
    pub port: Option<u16>,
    /// Only sensitive files or endpoints (file, net).
    pub sensitive: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpikeConfig {
    /// More than this many failed actions of one agent within the window.
    pub count: Option<u64>,
    pub window: Option<String>,
    pub severity: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Alert when an agent's actions in the window exceed `factor` times its own average per
    /// window over the baseline period before it…
    pub factor: Option<f64>,
    pub window: Option<String>,
    pub baseline: Option<String>,
    /// …and are at least this many.
    pub min_actions: Option<u64>,
    pub severity: Option<String>,
}

/// `[alerts]` in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    /// Built-in rules to turn off, by name.
    #[serde(default)]
    pub disable: Vec<String>,
    /// Hosts an agent may connect to without `unlisted_host`: DNS name globs, IPs, or CIDRs.
    /// Loopback and unix sockets are always allowed.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    pub failure_spike: Option<SpikeConfig>,
    pub unusual_activity: Option<RateConfig>,
    /// POST every alert here (http:// or https://).
    pub webhook: Option<String>,
    /// `json` (default: the alert object) or `slack` (`{"text": …}`).
    pub webhook_format: Option<String>,
    /// Longest wait between delivery attempts (default 60s).
    pub webhook_retry_max: Option<String>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleConfig>,
}

/// A duration like `90s`, `5m`, `2h`, `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().map_err(|_| format!("`{s}`: expected a number and a unit, like 30s, 5m, 2h or 7d"))?;
    let d = match unit {
        "ms" => Duration::milliseconds(n),
        "s" => Duration::seconds(n),
        "m" => Duration::minutes(n),
        "h" => Duration::hours(n),
        "d" => Duration::days(n),
        _ => return Err(format!("`{s}`: unknown unit `{unit}`; use ms, s, m, h or d")),
    };
    if n <= 0 {
        return Err(format!("`{s}`: must be more than zero"));
    }
    Ok(d)
}

const SYSTEM_PATHS: &[&str] = &[
    "/etc/**",
    "/usr/**",
    "/boot/**",
    "/bin/**",
    "/sbin/**",
    "/lib/**",
    "/lib64/**",
    "/var/spool/cron/**",
    "/**/.bashrc",
    "/**/.bash_profile",
    "/**/.profile",
    "/**/.zshrc",
    "/**/.zprofile",
    "/**/.config/systemd/**",
];

/// Built-in rules written as config rules (the counting rules are separate).
fn builtin() -> Vec<RuleConfig> {
    // A command word: at the start, after a shell separator, or after a word that runs its
    // argument as a command (`sh -c`, `sudo`, `env`, `xargs`...), with or without a directory.
    // An argument such as `grep sudo` is not a command word.
    const W: &str = r"(?:^|[;&|(`]\s*|\s(?:-c|sudo|doas|exec|env|xargs|nohup|time|nice)\s+)(?:\S*/)?";
    let rule = |name: &str, severity: &str, on: &[&str]| RuleConfig {
        name: name.into(),
        severity: Some(severity.into()),
        window: Some("5m".into()),
        on: OneOrMany::Many(on.iter().map(|s| (*s).to_owned()).collect()),
        agent: None,
        command: None,
        exe: None,
        path: None,
        access: None,
        result: None,
        host: None,
        port: None,
        sensitive: None,
    };
    let cmd = |name: &str, severity: &str, re: &str| RuleConfig {
        command: Some(re.into()),
        ..rule(name, severity, &["exec"])
    };
    vec![
        RuleConfig { sensitive: Some(true), ..rule("sensitive_data", "high", &["file", "net"]) },
        RuleConfig {
            path: Some(OneOrMany::Many(SYSTEM_PATHS.iter().map(|s| (*s).to_owned()).collect())),
            access: Some(OneOrMany::One("writes".into())),
            result: Some(OneOrMany::One("ok".into())),
            ..rule("system_write", "high", &["file"])
        },
        RuleConfig {
            result: Some(OneOrMany::One("denied".into())),
            ..rule("denied", "medium", &["file", "net", "exec"])
        },
        cmd(
            "recursive_delete",
            "critical",
            &format!(
                r"{W}rm\s+(?:\S+\s+)*-(?:-recursive|[a-zA-Z]*[rR][a-zA-Z]*)\s+(?:\S+\s+)*(?:/|/\*|/(?:etc|usr|boot|bin|sbin|lib|lib64|var|opt|root|home|srv)/?|/(?:etc|usr|boot|var/log|var/lib)/\S*|~/?)(?:\s|$)"
            ),
        ),
        cmd(
            "pipe_to_shell",
            "high",
            &format!(r"{W}(?:curl|wget|fetch)\b[^|;&]*\|\s*(?:sudo\s+)?(?:\S*/)?(?:ba|da|z|k)?sh\b"),
        ),
        cmd("chmod_777", "medium", &format!(r"{W}chmod\s+(?:-\S+\s+)*(?:0?777|[augo]*\+rwx)(?:\s|$)")),
        cmd("sudo", "medium", &format!(r"{W}(?:sudo|doas)(?:\s|$)")),
        cmd(
            "history_wipe",
            "high",
            &format!(
                r"{W}(?:history\s+-c|unset\s+HISTFILE|(?:export\s+)?HISTSIZE=0|(?:shred|truncate|rm)\s+.*(?:_history|/var/log/)|journalctl\s+.*--vacuum|ln\s+-sf\s+/dev/null\s+\S*_history)"
            ),
        ),
        RuleConfig {
            path: Some(OneOrMany::Many(vec!["/var/log/**".into(), "*_history".into(), "/var/log/journal/**".into()])),
            access: Some(OneOrMany::Many(vec!["delete".into(), "truncate".into()])),
            result: Some(OneOrMany::One("ok".into())),
            ..rule("log_wipe", "high", &["file"])
        },
        rule("tamper", "critical", &["tamper"]),
    ]
}

/// Names of every built-in rule, for `disable` and the docs.
pub fn builtin_names() -> Vec<String> {
    let mut v: Vec<String> = builtin().into_iter().map(|r| r.name).collect();
    v.extend(["failure_spike", "unusual_activity", "unlisted_host"].map(String::from));
    v.extend(ACCOUNT_RULES.iter().map(|(n, _)| (*n).to_owned()));
    v
}

/// The rules on the agent's account against the kernel's (`crate::account`), with their
/// severity: a call's verdict, a report no hook of the agent's sent, and an agent gone silent.
pub const ACCOUNT_RULES: &[(&str, &str)] = &[
    ("undeclared_action", "high"),
    ("declared_not_observed", "medium"),
    ("agent_reports_missing", "high"),
    ("report_unattested", "high"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Net,
    Exec,
    Tamper,
    Action,
}

#[derive(Debug, Clone)]
struct Rule {
    name: String,
    severity: String,
    window: Duration,
    kinds: Vec<Kind>,
    agent: Option<regex::Regex>,
    command: Option<regex::Regex>,
    exe: Option<regex::Regex>,
    path: Option<regex::RegexSet>,
    access: Vec<String>,
    result: Vec<String>,
    host: Option<regex::Regex>,
    port: Option<u16>,
    sensitive: Option<bool>,
}

fn whole_glob(g: &str) -> String {
    format!("^{}$", regex::escape(g).replace("\\*", ".*").replace("\\?", "."))
}

fn compile(r: &RuleConfig, at: &str) -> Result<Rule, (String, String)> {
    let err = |k: &str, m: String| (format!("{at}.{k}"), m);
    if r.name.is_empty() || !r.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(err("name", format!("`{}`: use letters, digits, `_` and `-`", r.name)));
    }
    let severity = r.severity.clone().unwrap_or_else(|| "medium".into());
    if !SEVERITIES.contains(&severity.as_str()) {
        return Err(err("severity", format!("`{severity}`: expected one of {}", SEVERITIES.join(", "))));
    }
    let window = parse_duration(r.window.as_deref().unwrap_or("5m")).map_err(|m| err("window", m))?;
    let mut kinds = Vec::new();
    for k in r.on.to_vec() {
        kinds.push(match k.as_str() {
            "file" => Kind::File,
            "net" => Kind::Net,
            "exec" => Kind::Exec,
            "tamper" => Kind::Tamper,
            "action" => Kind::Action,
            _ => return Err(err("on", format!("`{k}`: expected file, net, exec, tamper or action"))),
        });
    }
    if kinds.is_empty() {
        return Err(err("on", "name at least one of file, net, exec, tamper, action".into()));
    }
    let re = |k: &str, s: &str| {
        regex::Regex::new(s).map_err(|e| err(k, format!("`{s}`: {}", e.to_string().lines().last().unwrap_or(""))))
    };
    let access = r.access.as_ref().map(OneOrMany::to_vec).unwrap_or_default();
    for a in &access {
        if a != "writes" && !WRITE_ACCESSES.contains(&a.as_str()) && !["read", "exec"].contains(&a.as_str()) {
            return Err(err(
                "access",
                format!("`{a}`: expected writes, read, exec or one of {}", WRITE_ACCESSES.join(", ")),
            ));
        }
    }
    Ok(Rule {
        name: r.name.clone(),
        severity,
        window,
        kinds,
        agent: r.agent.as_deref().map(|g| re("agent", &whole_glob(g))).transpose()?,
        command: r.command.as_deref().map(|c| re("command", c)).transpose()?,
        exe: r.exe.as_deref().map(|g| re("exe", &glob_regex(g))).transpose()?,
        path: r
            .path
            .as_ref()
            .map(|p| {
                regex::RegexSet::new(p.to_vec().iter().map(|g| glob_regex(g))).map_err(|e| err("path", e.to_string()))
            })
            .transpose()?,
        access,
        result: r.result.as_ref().map(OneOrMany::to_vec).unwrap_or_default(),
        host: r.host.as_deref().map(|g| re("host", &whole_glob(g))).transpose()?,
        port: r.port,
        sensitive: r.sensitive,
    })
}

fn result_matches(want: &[String], result: &str) -> bool {
    want.is_empty()
        || want.iter().any(|w| match w.as_str() {
            "denied" => result == "EACCES" || result == "EPERM",
            "failed" => result != "ok",
            w => w == result,
        })
}

fn access_matches(want: &[String], access: &str) -> bool {
    want.is_empty() || want.iter().any(|w| w == access || (w == "writes" && WRITE_ACCESSES.contains(&access)))
}

/// An allowlist entry of `unlisted_host`.
#[derive(Debug, Clone)]
enum Allow {
    Name(regex::Regex),
    Net(std::net::IpAddr, u8),
}

fn parse_allow(s: &str) -> Result<Allow, String> {
    if let Some((ip, bits)) = s.split_once('/') {
        let ip: std::net::IpAddr = ip.parse().map_err(|_| format!("`{s}`: not an address/prefix"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let bits: u8 = bits
            .parse()
            .ok()
            .filter(|b| *b <= max)
            .ok_or_else(|| format!("`{s}`: prefix length must be 0 to {max}"))?;
        return Ok(Allow::Net(ip, bits));
    }
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(Allow::Net(ip, if ip.is_ipv4() { 32 } else { 128 }));
    }
    regex::Regex::new(&whole_glob(&s.to_ascii_lowercase())).map(Allow::Name).map_err(|e| e.to_string())
}

fn in_net(ip: std::net::IpAddr, net: std::net::IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (std::net::IpAddr::V4(a), std::net::IpAddr::V4(n)) => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - u32::from(bits)) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (std::net::IpAddr::V6(a), std::net::IpAddr::V6(n)) => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - u32::from(bits)) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The compiled rule set.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The rules that match one record; the counting rules follow.
    matching: Vec<Rule>,
    spike: Option<(u64, Duration, String)>,
    rate: Option<(f64, Duration, Duration, u64, String)>,
    allow: Option<Vec<Allow>>,
    unlisted_window: Duration,
    /// The [`ACCOUNT_RULES`] left on.
    account: Vec<&'static str>,
}

impl Rules {
    /// Compile the config's rules and the built-in ones it leaves on. Errors name the key.
    pub fn new(cfg: &AlertConfig) -> Result<Self, (String, String)> {
        let names = builtin_names();
        for (i, d) in cfg.disable.iter().enumerate() {
            if !names.contains(d) {
                return Err((
                    format!("alerts.disable[{i}]"),
                    format!("`{d}` is not a built-in rule; rules: {}", names.join(", ")),
                ));
            }
        }
        let on = |n: &str| !cfg.disable.iter().any(|d| d == n);
        let mut rules = Vec::new();
        for r in builtin().iter().filter(|r| on(&r.name)) {
            rules.push(compile(r, "alerts").expect("built-in rules compile"));
        }
        for (i, r) in cfg.rules.iter().enumerate() {
            let rule = compile(r, &format!("alerts.rule[{i}]"))?;
            if rules.iter().any(|x| x.name == rule.name)
                || ["failure_spike", "unusual_activity", "unlisted_host"].contains(&rule.name.as_str())
                || ACCOUNT_RULES.iter().any(|(n, _)| *n == rule.name)
            {
                return Err((format!("alerts.rule[{i}].name"), format!("`{}` is already a rule's name", rule.name)));
            }
            rules.push(rule);
        }
        let sev = |k: &str, s: &Option<String>, d: &str| {
            let s = s.clone().unwrap_or_else(|| d.into());
            if SEVERITIES.contains(&s.as_str()) {
                Ok(s)
            } else {
                Err((k.to_owned(), format!("`{s}`: expected one of {}", SEVERITIES.join(", "))))
            }
        };
        let spike = if on("failure_spike") {
            let c = cfg.failure_spike.clone().unwrap_or(SpikeConfig { count: None, window: None, severity: None });
            let w = parse_duration(c.window.as_deref().unwrap_or("5m"))
                .map_err(|m| ("alerts.failure_spike.window".to_owned(), m))?;
            Some((c.count.unwrap_or(5), w, sev("alerts.failure_spike.severity", &c.severity, "medium")?))
        } else {
            None
        };
        let rate = if on("unusual_activity") {
            let c = cfg.unusual_activity.clone().unwrap_or(RateConfig {
                factor: None,
                window: None,
                baseline: None,
                min_actions: None,
                severity: None,
            });
            let w = parse_duration(c.window.as_deref().unwrap_or("1m"))
                .map_err(|m| ("alerts.unusual_activity.window".to_owned(), m))?;
            let b = parse_duration(c.baseline.as_deref().unwrap_or("30m"))
                .map_err(|m| ("alerts.unusual_activity.baseline".to_owned(), m))?;
            if b <= w {
                return Err(("alerts.unusual_activity.baseline".into(), "must be longer than the window".into()));
            }
            let f = c.factor.unwrap_or(5.0);
            if !(f > 1.0 && f.is_finite()) {
                return Err(("alerts.unusual_activity.factor".into(), format!("{f}: expected a number above 1")));
            }
            Some((
                f,
                w,
                b,
                c.min_actions.unwrap_or(30),
                sev("alerts.unusual_activity.severity", &c.severity, "medium")?,
            ))
        } else {
            None
        };
        let allow = if on("unlisted_host") {
            let mut v = Vec::new();
            for (i, a) in cfg.allow_hosts.iter().enumerate() {
                v.push(parse_allow(a).map_err(|m| (format!("alerts.allow_hosts[{i}]"), m))?);
            }
            Some(v)
        } else {
            None
        };
        let account = ACCOUNT_RULES.iter().map(|(n, _)| *n).filter(|n| on(n)).collect();
        Ok(Self { matching: rules, spike, rate, allow, unlisted_window: Duration::minutes(5), account })
    }

    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.matching.iter().map(|r| r.name.clone()).collect();
        v.extend(self.spike.as_ref().map(|_| "failure_spike".to_owned()));
        v.extend(self.rate.as_ref().map(|_| "unusual_activity".to_owned()));
        v.extend(self.allow.as_ref().map(|_| "unlisted_host".to_owned()));
        v.extend(self.account.iter().map(|n| (*n).to_owned()));
        v
    }
}

/// One match, before grouping.
struct Hit {
    rule: String,
    severity: String,
    window: Duration,
    /// What repeats are grouped by besides the rule (the session, or the agent).
    scope: String,
    session: Option<Uuid>,
    action: Option<Uuid>,
    event: Option<Uuid>,
    summary: String,
    details: Value,
    /// What this match was, in a few words (path, destination, command), to list the distinct
    /// matches of a group.
    example: String,
    /// Each new `example` within the window is an alert at once, up to [`MAX_DESTINATIONS`]
    /// (`unlisted_host`: a new destination).
    distinct: bool,
}

impl Hit {
    /// The alert this match raises at once.
    fn record(&self, agent: &str, now: DateTime<Utc>) -> AlertRecord {
        let mut rec = AlertRecord {
            id: Uuid::now_v7(),
            session_id: self.session,
            action_id: self.action,
            agent: agent.to_owned(),
            rule: self.rule.clone(),
            severity: self.severity.clone(),
            first_at: now,
            last_at: now,
            count: 1,
            action_ids: Vec::new(),
            event_ids: Vec::new(),
            summary: self.summary.clone(),
            details: self.details.clone(),
            chain: crate::record::ChainLink::default(),
        };
        push_id(&mut rec.action_ids, self.action);
        push_id(&mut rec.event_ids, self.event);
        rec
    }
}

/// Repeats of a rule in a scope, waiting for the window to end.
#[derive(Debug)]
struct Group {
    rule: String,
    severity: String,
    agent: String,
    session: Option<Uuid>,
    first_at: DateTime<Utc>,
    until: DateTime<Utc>,
    /// Repeats after the first alert.
    count: u64,
    last_at: DateTime<Utc>,
    actions: Vec<Uuid>,
    events: Vec<Uuid>,
    summary: String,
    details: Value,
    /// The first [`MAX_EXAMPLES`] distinct repeats, each with how many times it came.
    examples: Vec<(String, u64)>,
    /// Repeats that are none of `examples`.
    others: u64,
    /// The examples alerted at once in this window (a `distinct` rule's, at most
    /// [`MAX_DESTINATIONS`]).
    alerted: Vec<String>,
}

impl Group {
    fn repeat(&mut self, h: &Hit, now: DateTime<Utc>) {
        self.count += 1;
        self.last_at = self.last_at.max(now);
        push_id(&mut self.actions, h.action);
        push_id(&mut self.events, h.event);
        if let Some(e) = self.examples.iter_mut().find(|e| e.0 == h.example) {
            e.1 += 1;
        } else if self.examples.len() < MAX_EXAMPLES {
            self.examples.push((h.example.clone(), 1));
        } else {
            self.others += 1;
        }
    }
}

/// The evaluation state.
pub struct Engine {
    rules: Rules,
    sensitive: Sensitive,
    agents: HashMap<Uuid, String>,
    groups: HashMap<(String, String), Group>,
    /// Failed action times per agent (`failure_spike`), action start times per agent
    /// (`unusual_activity`).
    failures: HashMap<String, VecDeque<DateTime<Utc>>>,
    starts: HashMap<String, VecDeque<DateTime<Utc>>>,
    pub raised: u64,
}

/// The `unusual_activity` test: `current` starts in the last window against the `before` starts
/// in the rest of the baseline. Returns the usual starts per window and whether `current` is
/// more than `factor` times that.
#[expect(
    clippy::cast_precision_loss,
    reason = "start counts stay under MAX_STARTS, exact in f64; the window lengths only form a ratio, for which 52 bits are plenty"
)]
fn against_baseline(current: u64, before: u64, factor: f64, window: Duration, baseline: Duration) -> (f64, bool) {
    let windows = (baseline.num_milliseconds() - window.num_milliseconds()) as f64 / window.num_milliseconds() as f64;
    let usual = before as f64 / windows;
    (usual, current as f64 > factor * usual)
}

fn push_id(v: &mut Vec<Uuid>, id: Option<Uuid>) {
    if let Some(id) = id {
        if v.len() < MAX_IDS && !v.contains(&id) {
            v.push(id);
        }
    }
}

impl Engine {
    pub fn new(rules: Rules, sensitive: Sensitive) -> Self {
        Self {
            rules,
            sensitive,
            agents: HashMap::new(),
            groups: HashMap::new(),
            failures: HashMap::new(),
            starts: HashMap::new(),
            raised: 0,
        }
    }

    /// A session's agent (sessions re-adopted after a restart have no start record here).
    pub fn session(&mut self, id: Uuid, agent: &str) {
        self.agents.insert(id, agent.to_owned());
    }

    fn agent(&self, session: Uuid) -> &str {
        self.agents.get(&session).map_or("", String::as_str)
    }

    /// Evaluate one record; returns the alerts it raises now.
    pub fn observe(&mut self, o: &Output) -> Vec<AlertRecord> {
        let mut hits = Vec::new();
        let now;
        let agent;
        match o {
            Output::SessionStart(s) => {
                self.agents.insert(s.id, s.agent.clone());
                return Vec::new();
            }
            Output::Event(e) => {
                let Some(f) = e.facts.as_deref() else { return Vec::new() };
                now = e.ts;
                agent = self.agent(e.session_id).to_owned();
                self.event_hits(&agent, e.session_id, e.action_id, e.id, f, &mut hits);
            }
            Output::Action(a) => {
                now = a.started_at;
                agent = self.agent(a.session_id).to_owned();
                self.action_hits(&agent, a, &mut hits);
            }
            Output::Report(r) => {
                now = r.received_at;
                agent = self.agent(r.session_id).to_owned();
                if !r.attested {
                    hits.extend(self.account_hit("report_unattested", r.session_id, None, || {
                        let what = format!("{} report {}", r.channel, r.event);
                        let summary =
                            format!("a {what} came from pid {} and is not the agent's own: {}", r.pid, r.attestation);
                        let details = json!({"report_id": r.id, "channel": r.channel, "event": r.event, "pid": r.pid,
                            "exec_id": r.exec_id, "tool_use_id": r.tool_use_id, "attestation": r.attestation});
                        (summary, details, what)
                    }));
                }
            }
            Output::Call(c) => {
                now = c.started_at;
                agent = self.agent(c.session_id).to_owned();
                let rule = match c.verdict.as_str() {
                    "undeclared" | "mismatch" => "undeclared_action",
                    // A call the agent itself says failed may well have left nothing.
                    "unobserved" if c.success != Some(false) => "declared_not_observed",
                    _ => return Vec::new(),
                };
                hits.extend(self.account_hit(rule, c.session_id, c.action_ids.first().copied(), || {
                    let tool = c.tool_name.as_deref().unwrap_or("no tool call");
                    let summary = format!("{} ({tool}): {}", c.verdict, crate::text::truncate_chars(&c.reason, 200));
                    let details = json!({"call_id": c.id, "verdict": c.verdict, "tool_name": c.tool_name,
                        "tool_use_id": c.tool_use_id, "reason": c.reason, "action_ids": c.action_ids});
                    (summary, details, crate::text::truncate_chars(&c.reason, 200))
                }));
            }
            _ => return Vec::new(),
        }
        let mut out = Vec::new();
        for h in hits {
            let key = (h.rule.clone(), h.scope.clone());
            if let Some(g) = self.groups.get_mut(&key) {
                if now < g.until {
                    if h.distinct && g.alerted.len() < MAX_DESTINATIONS && !g.alerted.contains(&h.example) {
                        // A new destination: an alert of its own, at once.
                        g.alerted.push(h.example.clone());
                        self.raised += 1;
                        out.push(h.record(&agent, now));
                    } else {
                        g.repeat(&h, now);
                    }
                    continue;
                }
            }
            if let Some(done) = self.groups.remove(&key) {
                out.extend(self.flush(done));
            }
            let rec = h.record(&agent, now);
            self.groups.insert(
                key,
                Group {
                    rule: rec.rule.clone(),
                    severity: rec.severity.clone(),
                    agent: agent.clone(),
                    session: h.session,
                    first_at: now,
                    until: now + h.window,
                    count: 0,
                    last_at: now,
                    actions: Vec::new(),
                    events: Vec::new(),
                    examples: Vec::new(),
                    others: 0,
                    alerted: if h.distinct { vec![h.example] } else { Vec::new() },
                    summary: h.summary,
                    details: h.details,
                },
            );
            self.raised += 1;
            out.push(rec);
        }
        out
    }

    /// A match of one of the [`ACCOUNT_RULES`], when it is on; `what` makes the summary, the
    /// details and the example.
    fn account_hit(
        &self,
        rule: &str,
        session: Uuid,
        action: Option<Uuid>,
        what: impl FnOnce() -> (String, Value, String),
    ) -> Option<Hit> {
        let (name, severity) = ACCOUNT_RULES.iter().find(|(n, _)| *n == rule)?;
        if !self.rules.account.contains(name) {
            return None;
        }
        let (summary, details, example) = what();
        Some(Hit {
            rule: (*name).to_owned(),
            severity: (*severity).to_owned(),
            window: Duration::minutes(5),
            scope: format!("session {session}"),
            session: Some(session),
            action,
            event: None,
            summary,
            details,
            example,
            distinct: false,
        })
    }

    /// An agent known to report that acts with no reports (`agent_reports_missing`): raised
    /// by the daemon when the account says so (see `crate::account`).
    pub fn silence(
        &mut self,
        session: Uuid,
        now: DateTime<Utc>,
        action: Option<Uuid>,
        summary: &str,
        details: Value,
    ) -> Vec<AlertRecord> {
        let Some(hit) = self.account_hit("agent_reports_missing", session, action, || {
            (summary.to_owned(), details, summary.to_owned())
        }) else {
            return Vec::new();
        };
        let agent = self.agent(session).to_owned();
        self.raised += 1;
        vec![hit.record(&agent, now)]
    }

    /// The grouped row of a finished window (nothing when there were no repeats): the first
    /// match's details, and which matches it covers (`examples` with their counts, `others`).
    fn flush(&mut self, mut g: Group) -> Option<AlertRecord> {
        (g.count > 0).then(|| {
            self.raised += 1;
            let mut summary = format!("{} more time(s) after: {}", g.count, g.summary);
            if g.examples.len() > 1 || g.others > 0 {
                let some: Vec<&str> = g.examples.iter().take(3).map(|e| e.0.as_str()).collect();
                let more = if g.others > 0 { "+" } else { "" };
                let tail = if g.examples.len() > some.len() || g.others > 0 { ", …" } else { "" };
                summary = format!("{summary} ({}{more} different: {}{tail})", g.examples.len(), some.join(", "));
            }
            if let Some(d) = g.details.as_object_mut() {
                let examples: Vec<Value> =
                    g.examples.iter().map(|(what, n)| json!({"what": what, "count": n})).collect();
                d.insert("examples".into(), Value::Array(examples));
                d.insert("others".into(), json!(g.others));
            }
            AlertRecord {
                id: Uuid::now_v7(),
                session_id: g.session,
                action_id: g.actions.first().copied(),
                agent: g.agent,
                rule: g.rule,
                severity: g.severity,
                first_at: g.first_at,
                last_at: g.last_at,
                count: g.count,
                action_ids: g.actions,
                event_ids: g.events,
                summary,
                details: g.details,
                chain: crate::record::ChainLink::default(),
            }
        })
    }

    /// Grouped rows whose window has ended by `now`; `all` flushes every group (at a stop).
    pub fn tick(&mut self, now: DateTime<Utc>, all: bool) -> Vec<AlertRecord> {
        let done: Vec<_> = self.groups.iter().filter(|(_, g)| all || g.until <= now).map(|(k, _)| k.clone()).collect();
        let mut out = Vec::new();
        for k in done {
            if let Some(g) = self.groups.remove(&k) {
                out.extend(self.flush(g));
            }
        }
        // Forget sessions' agents only through their end: keep the map bounded anyway.
        if self.agents.len() > 100_000 {
            self.agents.clear();
        }
        out
    }

    fn rule_base(
        r: &Rule,
        session: Uuid,
        action: Option<Uuid>,
        event: Option<Uuid>,
        summary: String,
        details: Value,
        example: String,
    ) -> Hit {
        Hit {
            rule: r.name.clone(),
            severity: r.severity.clone(),
            window: r.window,
            scope: session.to_string(),
            session: Some(session),
            action,
            event,
            summary,
            details,
            example,
            distinct: false,
        }
    }

    fn event_hits(
        &self,
        agent: &str,
        session: Uuid,
        action: Option<Uuid>,
        event: Uuid,
        f: &EventFacts,
        hits: &mut Vec<Hit>,
    ) {
        let kind = match f.kind {
            "file" => Kind::File,
            "net" => Kind::Net,
            "exec" | "exec_failed" => Kind::Exec,
            "tamper" => Kind::Tamper,
            _ => return,
        };
        let command = (kind == Kind::Exec).then(|| f.argv.join(" "));
        for r in &self.rules.matching {
            if !r.kinds.contains(&kind)
                || r.agent.as_ref().is_some_and(|a| !a.is_match(agent))
                || !result_matches(&r.result, &f.result)
            {
                continue;
            }
            match kind {
                Kind::File => {
                    for (path, access) in &f.files {
                        let sensitive = self.sensitive.path(path, Some(f.pid));
                        if r.path.as_ref().is_some_and(|p| !p.is_match(path))
                            || !access_matches(&r.access, access)
                            || r.sensitive.is_some_and(|s| s != sensitive)
                        {
                            continue;
                        }
                        let what = if sensitive && r.sensitive == Some(true) { "sensitive file " } else { "" };
                        let summary = format!("{agent}: {access} {what}{path} ({})", f.result);
                        let details = json!({"path": path, "access": access, "result": f.result, "sensitive": sensitive, "pid": f.pid});
                        let example = format!("{access} {}", crate::text::truncate_chars(path, 200));
                        hits.push(Self::rule_base(r, session, action, Some(event), summary, details, example));
                        break;
                    }
                }
                Kind::Net => {
                    let Some(n) = &f.net else { continue };
                    let sensitive = self.sensitive.net(n);
                    let name = n.host.as_deref().or(n.addr.as_deref()).unwrap_or("");
                    if r.host
                        .as_ref()
                        .is_some_and(|h| !h.is_match(name) && !n.addr.as_deref().is_some_and(|a| h.is_match(a)))
                        || r.port.is_some_and(|p| n.port != Some(p))
                        || r.sensitive.is_some_and(|s| s != sensitive)
                    {
                        continue;
                    }
                    let port = n.port.map(|p| format!(":{p}")).unwrap_or_default();
                    let summary = format!("{agent}: {} {name}{port} ({})", n.op, n.result);
                    let details = json!({"op": n.op, "addr": n.addr, "host": n.host, "port": n.port, "result": n.result, "sensitive": sensitive, "pid": f.pid});
                    let example = format!("{} {}{port}", n.op, crate::text::truncate_chars(name, 200));
                    hits.push(Self::rule_base(r, session, action, Some(event), summary, details, example));
                }
                Kind::Exec => {
                    let cmd = command.as_deref().unwrap_or("");
                    if r.command.as_ref().is_some_and(|c| !c.is_match(cmd))
                        || r.exe.as_ref().is_some_and(|x| !x.is_match(&f.exe))
                    {
                        continue;
                    }
                    let what = if f.kind == "exec_failed" { "could not run" } else { "ran" };
                    let summary = format!("{agent}: {what} {} ({})", crate::text::truncate_chars(cmd, 200), f.result);
                    hits.push(Self::rule_base(
                        r,
                        session,
                        action,
                        Some(event),
                        summary,
                        json!({"command": cmd, "exe": f.exe, "result": f.result, "pid": f.pid}),
                        crate::text::truncate_chars(cmd, 200),
                    ));
                }
                Kind::Tamper => {
                    let t = f.tamper.as_deref().unwrap_or("tamper");
                    let summary = format!("{agent}: tampering ({t}) by pid {}", f.pid);
                    hits.push(Self::rule_base(
                        r,
                        session,
                        action,
                        Some(event),
                        summary,
                        json!({"tamper": t, "result": f.result, "pid": f.pid}),
                        t.to_owned(),
                    ));
                }
                Kind::Action => {}
            }
        }
        if let (Kind::Net, Some(n)) = (kind, &f.net) {
            hits.extend(self.unlisted_hit(agent, session, action, event, f.pid, n));
        }
    }

    /// `unlisted_host`: a connect to a destination outside `allow_hosts`.
    fn unlisted_hit(
        &self,
        agent: &str,
        session: Uuid,
        action: Option<Uuid>,
        event: Uuid,
        pid: u32,
        n: &NetSummary,
    ) -> Option<Hit> {
        let allow = self.rules.allow.as_ref()?;
        if n.op != "connect" || Self::allowed(allow, n) {
            return None;
        }
        let name = n.host.as_deref().or(n.addr.as_deref()).unwrap_or("");
        let port = n.port.map(|p| format!(":{p}")).unwrap_or_default();
        Some(Hit {
            rule: "unlisted_host".into(),
            severity: "low".into(),
            window: self.rules.unlisted_window,
            // One group per session: an alert at once for each of its first destinations in
            // the window, every other connect counted in the group.
            scope: session.to_string(),
            session: Some(session),
            action,
            event: Some(event),
            summary: format!("{agent}: connect to {name}{port}, not in alerts.allow_hosts ({})", n.result),
            details: json!({"addr": n.addr, "host": n.host, "port": n.port, "result": n.result, "pid": pid}),
            example: format!("{}{port}", crate::text::truncate_chars(name, 200)),
            distinct: true,
        })
    }

    fn allowed(allow: &[Allow], n: &NetSummary) -> bool {
        if n.family == "unix" || n.family.starts_with("family") {
            return true;
        }
        let ip = n.addr.as_deref().and_then(|a| a.parse::<std::net::IpAddr>().ok());
        if ip.is_some_and(|ip| ip.is_loopback() || ip.is_unspecified()) {
            return true;
        }
        allow.iter().any(|a| match a {
            Allow::Net(net, bits) => ip.is_some_and(|ip| in_net(ip, *net, *bits)),
            Allow::Name(re) => {
                n.host.as_deref().is_some_and(|h| re.is_match(&h.to_ascii_lowercase()))
                    || n.addr.as_deref().is_some_and(|a| re.is_match(a))
            }
        })
    }

    fn action_hits(&mut self, agent: &str, a: &crate::record::ActionRecord, hits: &mut Vec<Hit>) {
        let failed = a.exit_code.is_some_and(|c| c != 0) || a.signal.is_some();
        let result = if failed { "failed" } else { "ok" };
        let mut found = Vec::new();
        if let Some((count, window, severity)) = &self.rules.spike {
            if failed {
                let q = self.failures.entry(agent.to_owned()).or_default();
                let t = a.ended_at.unwrap_or(a.started_at);
                q.push_back(t);
                while q.front().is_some_and(|f| *f <= t - *window) {
                    q.pop_front();
                }
                if q.len() as u64 > *count {
                    let n = q.len();
                    q.clear();
                    found.push(Hit {
                        rule: "failure_spike".into(),
                        severity: severity.clone(),
                        window: *window,
                        scope: format!("agent {agent}"),
                        session: Some(a.session_id),
                        action: Some(a.id),
                        event: None,
                        summary: format!("{agent}: {n} failed actions within {}s, the last: {}", window.num_seconds(), crate::text::truncate_chars(&a.command, 120)),
                        details: json!({"failed": n, "window_secs": window.num_seconds(), "command": a.command, "exit_code": a.exit_code, "signal": a.signal}),
                        example: crate::text::truncate_chars(&a.command, 200),
                        distinct: false,
                    });
                }
            }
        }
        if let Some((factor, window, baseline, min, severity)) = &self.rules.rate {
            let q = self.starts.entry(agent.to_owned()).or_default();
            let t = a.started_at;
            q.push_back(t);
            // Memory stays bounded however busy the agent: past the cap the oldest starts go,
            // which can only make the baseline lower (more alerts, never fewer).
            if q.len() > MAX_STARTS {
                q.pop_front();
            }
            while q.front().is_some_and(|f| *f <= t - *baseline) {
                q.pop_front();
            }
            let current = q.iter().filter(|s| **s > t - *window).count() as u64;
            let before = q.len() as u64 - current;
            let (usual, above) = against_baseline(current, before, *factor, *window, *baseline);
            if current >= *min && above {
                found.push(Hit {
                    rule: "unusual_activity".into(),
                    severity: severity.clone(),
                    window: *window,
                    scope: format!("agent {agent}"),
                    session: Some(a.session_id),
                    action: Some(a.id),
                    event: None,
                    summary: format!("{agent}: {current} actions within {}s, usually {usual:.1}", window.num_seconds()),
                    details: json!({"actions": current, "usual": usual, "factor": factor, "window_secs": window.num_seconds(), "baseline_secs": baseline.num_seconds()}),
                    example: crate::text::truncate_chars(&a.command, 200),
                    distinct: false,
                });
            }
        }
        for r in &self.rules.matching {
            if !r.kinds.contains(&Kind::Action)
                || r.agent.as_ref().is_some_and(|x| !x.is_match(agent))
                || r.command.as_ref().is_some_and(|c| !c.is_match(&a.command))
                || r.exe.as_ref().is_some_and(|x| !x.is_match(&a.exe))
                || !result_matches(&r.result, result)
            {
                continue;
            }
            let summary = format!(
                "{agent}: {} ({})",
                crate::text::truncate_chars(&a.command, 200),
                a.exit_code.map_or_else(|| "no exit".into(), |c| format!("exit {c}"))
            );
            found.push(Self::rule_base(
                r,
                a.session_id,
                Some(a.id),
                None,
                summary,
                json!({"command": a.command, "exit_code": a.exit_code, "signal": a.signal}),
                crate::text::truncate_chars(&a.command, 200),
            ));
        }
        hits.extend(found);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
/// Where alerts are posted (`alerts.webhook`); delivery is `daemon/webhook.rs`.
pub struct WebhookTarget {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl WebhookTarget {
    /// `scheme://host[:port]`, the port only when not the scheme's default: all of the URL a
    /// log or an error may show, since its path often holds the secret token (a Slack
    /// webhook's does).
    pub fn origin(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == if self.tls { 443 } else { 80 } {
            format!("{scheme}://{host}")
        } else {
            format!("{scheme}://{host}:{}", self.port)
        }
    }
}

/// A webhook URL as an error may show it: the scheme and host, without credentials, and `/…`
/// for any path (it may hold the token).
fn url_shown(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").map_or(("", url), |(s, r)| (s, r));
    let (authority, path) = rest.find(['/', '?', '#']).map_or((rest, ""), |i| rest.split_at(i));
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let scheme = if scheme.is_empty() { String::new() } else { format!("{scheme}://") };
    let more = if path.is_empty() || path == "/" { "" } else { "/…" };
    crate::text::visible(&format!("{scheme}{host}{more}"))
}

/// Parse `http://host[:port]/path` or `https://…`. Errors never show the path or credentials.
pub fn parse_webhook_url(url: &str) -> Result<WebhookTarget, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!("`{}`: expected an http:// or https:// URL", url_shown(url)));
    };
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    if authority.contains('@') {
        return Err(format!("`{}`: credentials in the URL are not supported; put a token in the path", url_shown(url)));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
            h.trim_start_matches('[').trim_end_matches(']').to_owned(),
            p.parse().map_err(|_| format!("`{}`: bad port", url_shown(url)))?,
        ),
        _ => (authority.trim_start_matches('[').trim_end_matches(']').to_owned(), if tls { 443 } else { 80 }),
    };
    if host.is_empty() {
        return Err(format!("`{}`: no host", url_shown(url)));
    }
    Ok(WebhookTarget { tls, host, port, path: path.to_owned() })
}

/// Text for a Slack message: hidden characters shown (`text::visible`), then `&`, `<` and `>`
/// escaped as Slack requires, so a summary the agent shaped can neither mention
/// (`<!channel>`, `<@U…>`) nor link (`<https://…|Approve the deploy>`).
pub fn slack_escape(s: &str) -> String {
    crate::text::visible(s).replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The body posted with `webhook_format = "slack"`: `{"text": "agentmon [SEVERITY] rule: summary"}`.
pub fn slack_payload(alert: &Value) -> Value {
    let field = |k: &str| alert[k].as_str().unwrap_or_default();
    let text = format!(
        "agentmon [{}] {}: {}",
        slack_escape(&field("severity").to_uppercase()),
        slack_escape(field("rule")),
        slack_escape(field("summary"))
    );
    json!({ "text": text })
}

/// The alert as delivered to the log and the webhook (`--json` of `agentmon alerts` has the
/// same fields).
pub fn payload(host: &str, a: &AlertRecord) -> Value {
    json!({
        "id": a.id, "host": host, "session_id": a.session_id, "action_id": a.action_id, "agent": a.agent,
        "rule": a.rule, "severity": a.severity, "first_at": a.first_at, "last_at": a.last_at, "count": a.count,
        "action_ids": a.action_ids, "event_ids": a.event_ids, "summary": a.summary, "details": a.details,
        "chain_seq": a.chain.seq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{ActionRecord, EventRecord, SessionStart};

    fn engine(cfg: &AlertConfig) -> Engine {
        let mut e = Engine::new(
            Rules::new(cfg).expect("rules"),
            Sensitive::new(&crate::sensitive::SensitiveConfig::default(), vec!["/var/lib/agentmon".into()]).expect("s"),
        );
        e.observe(&Output::SessionStart(SessionStart {
            id: Uuid::from_u128(1),
            agent: "claude".into(),
            label: None,
            cgroup: String::new(),
            cgroup_id: 1,
            uid: 0,
            source: "run".into(),
            started_at: Utc::now(),
            redacted: Vec::new(),
            chain: crate::record::ChainLink::default(),
        }));
        e
    }

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).expect("time")
    }

    fn event(at: i64, facts: EventFacts) -> Output {
        Output::Event(EventRecord {
            id: Uuid::now_v7(),
            session_id: Uuid::from_u128(1),
            action_id: Some(Uuid::from_u128(9)),
            exec_id: String::new(),
            seq: 1,
            ts: t(at),
            kind: facts.kind.into(),
            pid: 5,
            tid: 5,
            data: String::new(),
            redacted: Vec::new(),
            chain: crate::record::ChainLink::default(),
            facts: Some(Box::new(facts)),
        })
    }

    fn file(path: &str, access: &'static str, result: &str) -> EventFacts {
        EventFacts {
            kind: "file",
            pid: 5,
            result: result.into(),
            files: vec![(path.into(), access)],
            ..EventFacts::default()
        }
    }

    fn exec(cmd: &[&str]) -> EventFacts {
        EventFacts {
            kind: "exec",
            pid: 5,
            result: "ok".into(),
            argv: cmd.iter().map(|s| (*s).to_owned()).collect(),
            exe: cmd[0].into(),
            ..EventFacts::default()
        }
    }

    fn connect(addr: &str, host: Option<&str>, result: &str) -> EventFacts {
        EventFacts {
            kind: "net",
            pid: 5,
            result: result.into(),
            net: Some(NetSummary {
                op: "connect".into(),
                family: "ipv4".into(),
                addr: Some(addr.into()),
                port: Some(443),
                host: host.map(Into::into),
                result: result.into(),
                count: 1,
                sensitive: false,
            }),
            ..EventFacts::default()
        }
    }

    fn rules_of(e: &mut Engine, o: &Output) -> Vec<String> {
        e.observe(o).into_iter().map(|a| a.rule).collect()
    }

    fn action(at: i64, exit: i32) -> Output {
        Output::Action(ActionRecord {
            id: Uuid::now_v7(),
            session_id: Uuid::from_u128(1),
            command: "make test".into(),
            started_at: t(at),
            ended_at: Some(t(at)),
            exit_code: Some(exit),
            complete: true,
            ..ActionRecord::default()
        })
    }

    #[test]
    fn webhook_urls() {
        assert_eq!(
            parse_webhook_url("http://127.0.0.1:9000/hook"),
            Ok(WebhookTarget { tls: false, host: "127.0.0.1".into(), port: 9000, path: "/hook".into() })
        );
        assert_eq!(
            parse_webhook_url("https://hooks.example/services/T/B/x"),
            Ok(WebhookTarget { tls: true, host: "hooks.example".into(), port: 443, path: "/services/T/B/x".into() })
        );
        assert_eq!(
            parse_webhook_url("http://[::1]:81"),
            Ok(WebhookTarget { tls: false, host: "::1".into(), port: 81, path: "/".into() })
        );
        assert!(parse_webhook_url("ftp://x").is_err());
        assert!(parse_webhook_url("http://u:p@x/").is_err());
        assert!(parse_webhook_url("http://x:notaport/").is_err());
        // What a log line or an error shows: scheme and host, never the token path or credentials.
        let origin = |u: &str| parse_webhook_url(u).expect("url").origin();
        assert_eq!(origin("https://hooks.slack.com/services/T0/B0/s3cr3tT0ken"), "https://hooks.slack.com");
        assert_eq!(origin("http://127.0.0.1:9000/hook?token=s3cr3t"), "http://127.0.0.1:9000");
        assert_eq!(origin("http://[::1]:80/x"), "http://[::1]");
        for (url, shown) in [
            ("ftp://x/s3cr3t", "`ftp://x/…`"),
            ("hooks.slack.com/services/T0/B0/s3cr3t", "`hooks.slack.com/…`"),
            ("https://user:s3cr3t@hooks.example/s3cr3t", "`https://hooks.example/…`"),
            ("https://hooks.example:x/s3cr3t", "`https://hooks.example:x/…`"),
        ] {
            let err = parse_webhook_url(url).expect_err(url);
            assert!(err.starts_with(shown) && !err.contains("s3cr3t"), "{url}: {err}");
        }
    }

    #[test]
    fn slack_text_cannot_mention_link_or_hide() {
        let alert = serde_json::json!({
            "severity": "high", "rule": "sudo<!here>",
            "summary": "claude: sudo <!channel> <@U123> <https://evil.example|Approve the deploy> a&b \u{202e}txt.exe \u{200b}\u{9b}\u{7f}",
        });
        let body = slack_payload(&alert);
        assert_eq!(
            body["text"],
            "agentmon [HIGH] sudo&lt;!here&gt;: claude: sudo &lt;!channel&gt; &lt;@U123&gt; \
             &lt;https://evil.example|Approve the deploy&gt; a&amp;b \\u{202e}txt.exe \\u{200b}\\u{9b}\\x7f"
        );
        let text = body["text"].as_str().expect("text");
        assert!(!text.contains('<') && !text.contains('>'), "no Slack control sequence survives: {text}");
        assert!(!text.chars().any(crate::text::is_hidden), "nothing hidden: {text}");
        assert_eq!(slack_escape("&lt;"), "&amp;lt;", "an escape in the text is itself escaped");
    }

    #[test]
    fn each_built_in_rule_fires_on_its_record() {
        let cases: Vec<(EventFacts, &[&str])> = vec![
            (file("/root/.ssh/id_ed25519", "read", "ok"), &["sensitive_data"]),
            (file("/etc/cron.d/agent", "create", "ok"), &["system_write"]),
            (file("/home/u/.bashrc", "write", "ok"), &["system_write"]),
            (file("/etc/shadow", "read", "EACCES"), &["sensitive_data", "denied"]),
            (file("/var/log/syslog", "delete", "ok"), &["log_wipe"]),
            (exec(&["rm", "-rf", "/etc"]), &["recursive_delete"]),
            (exec(&["/bin/sh", "-c", "curl -fsSL https://x.example/i.sh | sudo bash"]), &["pipe_to_shell", "sudo"]),
            (exec(&["chmod", "-R", "777", "/srv"]), &["chmod_777"]),
            (exec(&["sudo", "systemctl", "restart", "x"]), &["sudo"]),
            (exec(&["bash", "-c", "history -c"]), &["history_wipe"]),
            (
                EventFacts {
                    kind: "tamper",
                    pid: 5,
                    result: "ok".into(),
                    tamper: Some("bpf".into()),
                    ..EventFacts::default()
                },
                &["tamper"],
            ),
            (connect("169.254.169.254", None, "ok"), &["sensitive_data", "unlisted_host"]),
            (connect("93.184.215.14", Some("api.example.com"), "ok"), &["unlisted_host"]),
            (connect("10.0.0.1", None, "EPERM"), &["denied", "unlisted_host"]),
        ];
        for (facts, want) in cases {
            let mut e = engine(&AlertConfig::default());
            let what = format!("{facts:?}");
            let mut got = rules_of(&mut e, &event(0, facts));
            got.sort();
            let mut want: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
            want.sort();
            assert_eq!(got, want, "for {what}");
        }
    }

    #[test]
    fn near_misses_raise_nothing() {
        for facts in [
            file("/srv/app/keys.txt", "read", "ok"),
            file("/etc/hosts", "read", "ok"),
            file("/tmp/build/out.o", "write", "ok"),
            file("/var/log/app.log", "write", "ok"),
            file("/tmp/x", "read", "ENOENT"),
            exec(&["rm", "-rf", "./build", "/tmp/cache"]),
            exec(&["rm", "/etc/foo.bak"]),
            exec(&["rm", "-rf", "/home/u/project/target"]),
            exec(&["chmod", "755", "run.sh"]),
            exec(&["curl", "-o", "x.sh", "https://x.example/i.sh"]),
            exec(&["grep", "-r", "sudo", "docs/"]),
            exec(&["git", "log", "--grep=history -c"]),
            exec(&["echo", "pseudo"]),
            connect("127.0.0.1", None, "ok"),
            connect("::1", None, "ECONNREFUSED"),
        ] {
            let mut e = engine(&AlertConfig::default());
            let what = format!("{facts:?}");
            assert_eq!(rules_of(&mut e, &event(0, facts)), Vec::<String>::new(), "for {what}");
        }
    }

    #[test]
    fn repeats_are_grouped_within_the_window() {
        let mut e = engine(&AlertConfig::default());
        assert_eq!(rules_of(&mut e, &event(0, exec(&["sudo", "ls"]))), ["sudo"]);
        for s in 1..4 {
            assert!(rules_of(&mut e, &event(s, exec(&["sudo", "id"]))).is_empty(), "grouped");
        }
        assert!(e.tick(t(100), false).is_empty(), "window not over");
        let grouped = e.tick(t(301), false);
        assert_eq!(grouped.len(), 1);
        assert_eq!((grouped[0].rule.as_str(), grouped[0].count, grouped[0].event_ids.len()), ("sudo", 3, 3));
        assert_eq!(grouped[0].details["examples"], json!([{"what": "sudo id", "count": 3}]));
        assert_eq!(grouped[0].details["others"], 0);
        assert_eq!(grouped[0].summary, "3 more time(s) after: claude: ran sudo ls (ok)");
        assert_eq!((grouped[0].first_at, grouped[0].last_at), (t(0), t(3)));
        // After the window a new occurrence is an alert at once again.
        assert_eq!(rules_of(&mut e, &event(400, exec(&["sudo", "ls"]))), ["sudo"]);
        // A window with no repeats writes no grouped row; a stop flushes everything.
        assert!(e.tick(t(10_000), true).is_empty());
        assert_eq!(e.raised, 3);
    }

    #[test]
    fn a_flood_of_destinations_makes_a_bounded_number_of_rows_that_count_every_connect() {
        let mut e = engine(&AlertConfig::default());
        let addr = |i: usize| format!("198.18.{}.{}", i / 250, i % 250);
        let mut rows = Vec::new();
        // 16 000 distinct destinations, then the first 100 once more, all within one window.
        for i in 0..16_000 {
            rows.extend(e.observe(&event(0, connect(&addr(i), None, "ENETUNREACH"))));
        }
        for i in 0..100 {
            rows.extend(e.observe(&event(1, connect(&addr(i), None, "ENETUNREACH"))));
        }
        assert_eq!(rows.len(), MAX_DESTINATIONS, "an alert at once for each of the first destinations only");
        let firsts: Vec<&str> = rows.iter().map(|a| a.details["addr"].as_str().expect("addr")).collect();
        assert_eq!(firsts, (0..MAX_DESTINATIONS).map(addr).collect::<Vec<_>>());
        assert!(rows.iter().all(|a| a.rule == "unlisted_host" && a.count == 1));
        assert!(e.tick(t(299), false).is_empty(), "the window is not over");
        let grouped = e.tick(t(300), false);
        assert_eq!(grouped.len(), 1, "one grouped row for the session");
        let g = &grouped[0];
        assert_eq!((g.count, g.first_at, g.last_at), (16_100 - MAX_DESTINATIONS as u64, t(0), t(1)));
        assert_eq!(rows.iter().map(|a| a.count).sum::<u64>() + g.count, 16_100, "every connect is counted once");
        let examples = g.details["examples"].as_array().expect("examples");
        assert_eq!(examples.len(), MAX_EXAMPLES);
        // The repeats: the 100 second connects (32 of them to alerted destinations) and the
        // 15 968 destinations past the first 32. The examples are the first distinct ones.
        assert_eq!(examples[0], json!({"what": format!("{}:443", addr(MAX_DESTINATIONS)), "count": 2}));
        let listed: u64 = examples.iter().map(|x| x["count"].as_u64().expect("count")).sum();
        assert_eq!(listed + g.details["others"].as_u64().expect("others"), g.count);
        assert_eq!((g.event_ids.len(), g.action_ids.len()), (MAX_IDS, 1));
        assert!(g.summary.starts_with("16068 more time(s) after: claude: connect to 198.18.0.0:443"), "{}", g.summary);
        assert!(
            g.summary.ends_with("(32+ different: 198.18.0.32:443, 198.18.0.33:443, 198.18.0.34:443, …)"),
            "{}",
            g.summary
        );
        // A new window alerts at once again.
        assert_eq!(rules_of(&mut e, &event(400, connect(&addr(5), None, "ok"))), ["unlisted_host"]);
        assert_eq!(e.raised, MAX_DESTINATIONS as u64 + 2);
    }

    #[test]
    fn failure_spike_counts_per_agent_in_the_window() {
        let cfg = AlertConfig {
            failure_spike: Some(SpikeConfig {
                count: Some(3),
                window: Some("60s".into()),
                severity: Some("high".into()),
            }),
            ..AlertConfig::default()
        };
        let mut e = engine(&cfg);
        for s in 0..3 {
            assert!(rules_of(&mut e, &action(s, 1)).is_empty());
        }
        assert!(rules_of(&mut e, &action(3, 0)).is_empty(), "a success is not a failure");
        let a = e.observe(&action(4, 2));
        assert_eq!(a.len(), 1);
        assert_eq!(
            (a[0].rule.as_str(), a[0].severity.as_str(), a[0].agent.as_str()),
            ("failure_spike", "high", "claude")
        );
        // Three failures spread over more than the window: no spike.
        let mut e = engine(&cfg);
        for s in [0, 40, 80, 120] {
            assert!(rules_of(&mut e, &action(s, 1)).is_empty());
        }
    }

    #[test]
    fn unusual_activity_compares_with_the_agents_own_baseline() {
        let cfg = AlertConfig {
            unusual_activity: Some(RateConfig {
                factor: Some(3.0),
                window: Some("10s".into()),
                baseline: Some("100s".into()),
                min_actions: Some(5),
                severity: None,
            }),
            ..AlertConfig::default()
        };
        let mut e = engine(&cfg);
        // A steady 2 actions per 10 s for 90 s: the baseline.
        for s in (0..90).step_by(5) {
            assert!(rules_of(&mut e, &action(s, 0)).is_empty(), "steady at {s}");
        }
        // Then 8 within 10 s: over 3 x 2 and at least 5.
        let mut got = Vec::new();
        for i in 0..8 {
            got.extend(rules_of(&mut e, &action(91 + i, 0)));
        }
        assert_eq!(got, ["unusual_activity"]);
    }

    #[test]
    fn config_rules_and_allowlist() {
        let cfg: AlertConfig = toml::from_str(
            r#"
            disable = ["sudo", "unusual_activity"]
            allow_hosts = ["*.example.com", "10.0.0.0/8"]
            [[rule]]
            name = "prod-db"
            severity = "critical"
            on = "net"
            host = "db.prod.*"
            port = 443
            [[rule]]
            name = "deploy-failed"
            on = "action"
            command = "^make deploy"
            result = "failed"
            [[rule]]
            name = "secrets-dir"
            on = "file"
            path = ["/srv/secrets/**"]
            access = "writes"
            agent = "claude*"
            "#,
        )
        .expect("toml");
        let mut e = engine(&cfg);
        assert!(rules_of(&mut e, &event(0, exec(&["sudo", "ls"]))).is_empty(), "disabled");
        assert_eq!(
            rules_of(&mut e, &event(0, connect("93.184.215.14", Some("db.prod.internal"), "ok"))),
            ["prod-db", "unlisted_host"]
        );
        assert!(
            rules_of(&mut e, &event(0, connect("93.184.215.14", Some("api.example.com"), "ok"))).is_empty(),
            "allowed by name"
        );
        assert!(rules_of(&mut e, &event(0, connect("10.2.3.4", None, "ok"))).is_empty(), "allowed by prefix");
        assert_eq!(rules_of(&mut e, &event(0, file("/srv/secrets/a", "write", "ok"))), ["secrets-dir"]);
        assert!(rules_of(&mut e, &event(0, file("/srv/secrets/a", "read", "ok"))).is_empty());
        let mut deploy = action(0, 2);
        if let Output::Action(a) = &mut deploy {
            a.command = "make deploy ENV=prod".into();
        }
        assert_eq!(rules_of(&mut e, &deploy), ["deploy-failed"]);
        assert_eq!(e.rules.names().len(), builtin_names().len() - 2 + 3);
    }

    #[test]
    fn bad_rules_are_errors_naming_the_key() {
        let err = |text: &str| Rules::new(&toml::from_str::<AlertConfig>(text).expect("toml")).expect_err(text);
        assert_eq!(err("disable = [\"sudoo\"]").0, "alerts.disable[0]");
        assert_eq!(err("[[rule]]\nname = \"x\"\non = \"files\"").0, "alerts.rule[0].on");
        assert_eq!(err("[[rule]]\nname = \"x\"\non = \"exec\"\ncommand = \"(\"").0, "alerts.rule[0].command");
        assert_eq!(err("[[rule]]\nname = \"x\"\non = \"exec\"\nseverity = \"urgent\"").0, "alerts.rule[0].severity");
        assert_eq!(err("[[rule]]\nname = \"x\"\non = \"exec\"\nwindow = \"5 minutes\"").0, "alerts.rule[0].window");
        assert_eq!(err("[[rule]]\nname = \"sudo\"\non = \"exec\"").0, "alerts.rule[0].name");
        assert_eq!(err("[[rule]]\nname = \"x\"\non = \"file\"\naccess = \"wrote\"").0, "alerts.rule[0].access");
        assert_eq!(err("allow_hosts = [\"10.0.0.0/40\"]").0, "alerts.allow_hosts[0]");
        assert_eq!(
            err("[unusual_activity]\nwindow = \"1h\"\nbaseline = \"30m\"").0,
            "alerts.unusual_activity.baseline"
        );
        assert_eq!(parse_duration("90s"), Ok(Duration::seconds(90)));
        assert!(parse_duration("0s").is_err() && parse_duration("5w").is_err() && parse_duration("m").is_err());
    }
}
