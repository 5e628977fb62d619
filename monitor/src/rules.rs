//! Session rules from the config file (`[[rule]]`): which processes become sessions without
//! `agentmon run`.
//!
//! - `exe`: a process anywhere on the host that execs one of these programs starts a session
//!   (decided in the kernel at the exec: `monitor-ebpf/src/rules.rs`).
//! - `unit`: a cgroup whose name matches the glob (a systemd unit: `claude-*.service`).
//! - `cgroup`: a cgroup whose path below the cgroup2 mount matches the glob.
//!
//! New cgroups are held pending by the kernel from their first instant; the daemon matches
//! them here and keeps or releases them.

use std::path::PathBuf;

use glob::{MatchOptions, Pattern};

use crate::ebpf::KernelRules;

/// One `[[rule]]` table as written.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Agent name recorded on the sessions it starts.
    pub agent: Option<String>,
    pub label: Option<String>,
    /// Executable or script paths (globs expanded when the daemon starts).
    pub exe: Option<Vec<String>>,
    /// systemd unit name glob, matched against a cgroup's own name.
    pub unit: Option<String>,
    /// cgroup path glob, below the cgroup2 mount, starting with `/`.
    pub cgroup: Option<String>,
}

#[derive(Debug, Clone)]
enum Matcher {
    Exe(Vec<String>),
    Unit(Pattern),
    Cgroup(Pattern),
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub agent: String,
    pub label: Option<String>,
    matcher: Matcher,
}

impl Rule {
    /// The `source` recorded on a session this rule started.
    pub fn source(&self) -> &'static str {
        match self.matcher {
            Matcher::Exe(_) => "exe",
            Matcher::Unit(_) => "unit",
            Matcher::Cgroup(_) => "cgroup",
        }
    }
}

/// The compiled rules.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

/// `*` and `?` stay within one path component, as in a shell.
const WITHIN_COMPONENT: MatchOptions =
    MatchOptions { case_sensitive: true, require_literal_separator: true, require_literal_leading_dot: false };

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

fn valid_name(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 128 || s.chars().any(char::is_control) {
        return Err(format!("{what} must be 1-128 printable characters"));
    }
    Ok(())
}

/// A session's agent name and optional label.
pub fn valid_session_names(agent: &str, label: Option<&str>) -> Result<(), String> {
    valid_name("agent", agent)?;
    label.map_or(Ok(()), |l| valid_name("label", l))
}

impl Rules {
    /// Check and compile the `[[rule]]` tables; an error is (key, message), the key as
    /// `rule[2].exe`.
    pub fn compile(rules: &[RuleConfig]) -> Result<Self, (String, String)> {
        let mut out = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            let err = |field: &str, message: String| (format!("rule[{i}].{field}"), message);
            let agent = r.agent.clone().unwrap_or_default();
            if agent.is_empty() {
                return Err(err("agent", "missing or empty: name the agent the rule's sessions belong to".into()));
            }
            valid_session_names(&agent, r.label.as_deref()).map_err(|m| err("agent", m))?;
            let given = [r.exe.is_some(), r.unit.is_some(), r.cgroup.is_some()].iter().filter(|b| **b).count();
            if given != 1 {
                return Err(err(
                    "exe",
                    format!("a rule needs exactly one of `exe`, `unit` or `cgroup` ({given} given)"),
                ));
            }
            let matcher = if let Some(exe) = &r.exe {
                Matcher::Exe(expand_exe(exe).map_err(|m| err("exe", m))?)
            } else if let Some(unit) = &r.unit {
                if unit.trim().is_empty() {
                    return Err(err("unit", "empty glob: name a unit, e.g. \"claude-*.service\"".into()));
                }
                if unit.contains('/') {
                    return Err(err(
                        "unit",
                        format!("`{unit}` holds a `/`: a unit glob matches a unit name; use `cgroup` for paths"),
                    ));
                }
                Matcher::Unit(
                    Pattern::new(unit).map_err(|e| err("unit", format!("`{unit}` is not a valid glob: {e}")))?,
                )
            } else {
                let cg = r.cgroup.clone().unwrap_or_default();
                if cg.trim().is_empty() || cg == "/" {
                    return Err(err(
                        "cgroup",
                        "empty glob: name cgroups below the cgroup2 mount, e.g. \"/agents.slice/*\"".into(),
                    ));
                }
                if !cg.starts_with('/') {
                    return Err(err(
                        "cgroup",
                        format!("`{cg}` must start with `/` (it is relative to the cgroup2 mount)"),
                    ));
                }
                Matcher::Cgroup(
                    Pattern::new(&cg).map_err(|e| err("cgroup", format!("`{cg}` is not a valid glob: {e}")))?,
                )
            };
            out.push(Rule { agent, label: r.label.clone(), matcher });
        }
        Ok(Self { rules: out })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// What the kernel applies: exe paths with their rule index, and whether new cgroups are
    /// held pending.
    pub fn kernel(&self) -> KernelRules {
        let mut k = KernelRules::default();
        for (i, r) in self.rules.iter().enumerate() {
            match &r.matcher {
                Matcher::Exe(paths) => k.exe_paths.extend(paths.iter().map(|p| (p.clone(), i as u32))),
                Matcher::Unit(_) | Matcher::Cgroup(_) => k.cgroups = true,
            }
        }
        k
    }

    /// The first unit or cgroup rule matching a cgroup (`path` relative to the cgroup2 mount).
    pub fn match_cgroup(&self, path: &str) -> Option<&Rule> {
        let leaf = path.rsplit('/').next().unwrap_or(path);
        self.rules.iter().find(|r| match &r.matcher {
            Matcher::Unit(p) => p.matches_with(leaf, WITHIN_COMPONENT),
            Matcher::Cgroup(p) => p.matches_with(path, WITHIN_COMPONENT),
            Matcher::Exe(_) => false,
        })
    }

    /// The exe rule an exec matched: by the file it ran, else by its first argument (the
    /// kernel's test, repeated to find which rule).
    pub fn match_exec(&self, filename: &str, argv: &[String]) -> Option<&Rule> {
        let hit = |name: &str| {
            self.rules.iter().find(|r| matches!(&r.matcher, Matcher::Exe(p) if p.iter().any(|x| x == name)))
        };
        hit(filename).or_else(|| argv.get(1).and_then(|a| hit(a)))
    }
}

/// Every path an exe rule names: globs expanded, and each file's canonical path beside the
/// path as written (a symlink runs under its own name; an interpreter gets the script's path as
/// it was run).
fn expand_exe(entries: &[String]) -> Result<Vec<String>, String> {
    if entries.is_empty() {
        return Err("empty list: name at least one program path".into());
    }
    let mut out = Vec::new();
    for e in entries {
        if e.trim().is_empty() {
            return Err("empty path in the list".into());
        }
        if !e.starts_with('/') {
            return Err(format!("`{e}` is not an absolute path"));
        }
        let found: Vec<PathBuf> = if has_glob(e) {
            let paths =
                glob::glob_with(e, WITHIN_COMPONENT).map_err(|err| format!("`{e}` is not a valid glob: {err}"))?;
            paths.filter_map(Result::ok).filter(|p| p.is_file()).collect()
        } else {
            let p = PathBuf::from(e);
            if !p.exists() {
                return Err(format!("{e} does not exist (install the program first, or remove the path)"));
            }
            if !p.is_file() {
                return Err(format!("{e} is not a file"));
            }
            vec![p]
        };
        if found.is_empty() {
            return Err(format!("`{e}` matches no file"));
        }
        for p in found {
            for s in [Some(p.clone()), std::fs::canonicalize(&p).ok()].into_iter().flatten() {
                let s = s.display().to_string();
                if s.len() >= monitor_common::RULE_PATH_MAX {
                    return Err(format!("{s} is longer than {} bytes", monitor_common::RULE_PATH_MAX - 1));
                }
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(toml_text: &str) -> Result<Rules, String> {
        #[derive(serde::Deserialize)]
        struct File {
            #[serde(default)]
            rule: Vec<RuleConfig>,
        }
        let f: File = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        Rules::compile(&f.rule).map_err(|(k, m)| format!("/etc/agentmon/agentmon.toml: key `{k}`: {m}"))
    }

    #[test]
    fn unit_and_cgroup_globs_match() {
        let r = compile("[[rule]]\nagent = \"claude\"\nunit = \"claude-*.service\"\n[[rule]]\nagent = \"ops\"\ncgroup = \"/agents.slice/*\"\n").expect("valid");
        assert_eq!(r.match_cgroup("/system.slice/claude-7.service").map(|r| r.agent.as_str()), Some("claude"));
        assert_eq!(r.match_cgroup("/system.slice/claude-7.service").map(Rule::source), Some("unit"));
        assert!(r.match_cgroup("/system.slice/claude-7.scope").is_none());
        assert_eq!(r.match_cgroup("/agents.slice/bot").map(Rule::source), Some("cgroup"));
        // `*` stays within one component.
        assert!(r.match_cgroup("/agents.slice/bot/child").is_none());
        let k = r.kernel();
        assert!(k.cgroups && k.exe_paths.is_empty());
    }

    #[test]
    fn exe_rules_expand_and_match() {
        let dir = std::env::temp_dir().join(format!("agentmon-rules-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("bin")).expect("tmp");
        std::fs::write(dir.join("bin/agent.js"), "#!/usr/bin/env node\n").expect("write");
        let _ = std::fs::remove_file(dir.join("bin/agent"));
        std::os::unix::fs::symlink(dir.join("bin/agent.js"), dir.join("bin/agent")).expect("symlink");
        let r = compile(&format!("[[rule]]\nagent = \"a\"\nexe = [\"{}/bin/agen?\"]\n", dir.display())).expect("valid");
        let link = dir.join("bin/agent").display().to_string();
        let real = std::fs::canonicalize(dir.join("bin/agent.js")).expect("real").display().to_string();
        let k = r.kernel();
        assert_eq!(k.exe_paths, vec![(link.clone(), 0), (real.clone(), 0)]);
        assert_eq!(r.match_exec(&link, &[]).map(Rule::source), Some("exe"));
        assert!(
            r.match_exec("/usr/bin/node", &["node".into(), real.clone()]).is_some(),
            "by the interpreter's first argument"
        );
        assert!(r.match_exec("/usr/bin/node", &["node".into(), "/other".into()]).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_rules_name_the_key() {
        let cases = [
            ("[[rule]]\nunit = \"x\"\n", "key `rule[0].agent`: missing or empty"),
            (
                "[[rule]]\nagent = \"a\"\n",
                "key `rule[0].exe`: a rule needs exactly one of `exe`, `unit` or `cgroup` (0 given)",
            ),
            ("[[rule]]\nagent = \"a\"\nunit = \"x\"\ncgroup = \"/y\"\n", "(2 given)"),
            ("[[rule]]\nagent = \"a\"\nunit = \"\"\n", "key `rule[0].unit`: empty glob"),
            ("[[rule]]\nagent = \"a\"\nunit = \"a/b\"\n", "holds a `/`"),
            ("[[rule]]\nagent = \"a\"\ncgroup = \"\"\n", "key `rule[0].cgroup`: empty glob"),
            ("[[rule]]\nagent = \"a\"\ncgroup = \"agents/*\"\n", "must start with `/`"),
            ("[[rule]]\nagent = \"a\"\nexe = []\n", "key `rule[0].exe`: empty list"),
            ("[[rule]]\nagent = \"a\"\nexe = [\"bin/claude\"]\n", "is not an absolute path"),
            (
                "[[rule]]\nagent = \"a\"\nexe = [\"/nonexistent/agentmon/claude\"]\n",
                "key `rule[0].exe`: /nonexistent/agentmon/claude does not exist",
            ),
            ("[[rule]]\nagent = \"a\"\nexe = [\"/nonexistent/*/claude\"]\n", "matches no file"),
            (
                "[[rule]]\nagent = \"ok\"\nunit = \"x\"\n[[rule]]\nagent = \"b\\tc\"\nunit = \"y\"\n",
                "key `rule[1].agent`: agent must be 1-128 printable characters",
            ),
        ];
        for (text, want) in cases {
            let e = compile(text).expect_err(text);
            assert!(e.starts_with("/etc/agentmon/agentmon.toml: key `rule[") || e.contains(want), "{e}");
            assert!(e.contains(want), "{text}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn names_are_validated() {
        assert!(valid_name("agent", "claude-code").is_ok());
        assert!(valid_name("agent", "").is_err());
        assert!(valid_name("agent", "a\nb").is_err());
    }
}
