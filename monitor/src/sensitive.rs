//! Sensitive resources: which file paths and network endpoints are marked `sensitive: true`
//! in the stored summaries, and so make an action or session `sensitive_data_accessed`.
//!
//! Built-in groups (each can be turned off by name in `[sensitive] disable`):
//!
//! | group      | matches |
//! |------------|---------|
//! | `ssh`      | anything under a `.ssh` directory, `authorized_keys`, `/etc/ssh/ssh_host_*_key` |
//! | `shadow`   | `/etc/shadow`, `/etc/gshadow` and their `-` backups |
//! | `sudoers`  | `/etc/sudoers`, `/etc/sudoers.d/**` |
//! | `keys`     | file names `*.pem`, `*.key`, `*.p12`, `*.pfx`, `id_*` |
//! | `dotenv`   | file names `.env`, `.env.*` |
//! | `netrc`    | file names `.netrc`, `.pgpass`, `.git-credentials` |
//! | `cloud`    | `**/.aws/credentials`, `**/.config/gcloud/**`, `**/.kube/config`, `**/.docker/config.json` |
//! | `proc`     | `/proc/<pid>/environ` and `/proc/<pid>/mem` of another process |
//! | `agentmon` | agentmon's own files (state, pins, runtime directory, config) |
//! | `metadata` | network: the cloud metadata service `169.254.169.254`, the docker socket |
//!
//! Patterns are globs: one starting with `/` matches the whole path (`*` within a component,
//! `**` across components); any other matches the file name. Extra paths and addresses come
//! from `[sensitive] paths` and `addrs` (an address is an IP, a DNS name the agent resolved,
//! or a unix socket path).

use regex::RegexSet;
use serde::Deserialize;

use crate::record::{FileSummary, NetSummary};

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensitiveConfig {
    /// More sensitive path globs.
    #[serde(default)]
    pub paths: Vec<String>,
    /// More sensitive addresses: IPs, DNS names (globs) or unix socket paths.
    #[serde(default)]
    pub addrs: Vec<String>,
    /// Built-in groups to turn off, by name.
    #[serde(default)]
    pub disable: Vec<String>,
}

pub const GROUPS: &[(&str, &[&str])] = &[
    ("ssh", &["/**/.ssh/**", "authorized_keys", "authorized_keys2", "/etc/ssh/ssh_host_*_key"]),
    ("shadow", &["/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-"]),
    ("sudoers", &["/etc/sudoers", "/etc/sudoers.d/**"]),
    ("keys", &["*.pem", "*.key", "*.p12", "*.pfx", "id_*"]),
    ("dotenv", &[".env", ".env.*"]),
    ("netrc", &[".netrc", ".pgpass", ".git-credentials"]),
    ("cloud", &["/**/.aws/credentials", "/**/.config/gcloud/**", "/**/.kube/config", "/**/.docker/config.json"]),
    ("proc", &[]),
    ("agentmon", &[]),
    ("metadata", &[]),
];

const METADATA_ADDRS: &[&str] = &["169.254.169.254", "fd00:ec2::254", "/run/docker.sock", "/var/run/docker.sock"];

/// The compiled matcher.
#[derive(Debug, Clone)]
pub struct Sensitive {
    paths: RegexSet,
    /// Path prefixes (agentmon's own directories and files).
    own: Vec<String>,
    proc: bool,
    addrs: RegexSet,
}

impl Default for Sensitive {
    fn default() -> Self {
        Self::new(&SensitiveConfig::default(), Vec::new()).expect("the built-in patterns compile")
    }
}

/// A glob as an anchored regex: `/…` matches the whole path, anything else the last component.
pub fn glob_regex(glob: &str) -> String {
    let mut re = String::from(if glob.starts_with('/') { "^" } else { "(?:^|/)" });
    let mut chars = glob.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                // `/**/` also matches a single `/`.
                if chars.peek() == Some(&'/') {
                    chars.next();
                    re.push_str("(?:.*/)?");
                } else {
                    re.push_str(".*");
                }
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    re
}

impl Sensitive {
    /// `own` is agentmon's own paths (directories match everything below them).
    pub fn new(cfg: &SensitiveConfig, own: Vec<String>) -> Result<Self, (String, String)> {
        for (i, d) in cfg.disable.iter().enumerate() {
            if !GROUPS.iter().any(|(g, _)| g == d) {
                let names: Vec<&str> = GROUPS.iter().map(|(g, _)| *g).collect();
                return Err((
                    format!("sensitive.disable[{i}]"),
                    format!("`{d}` is not a built-in group; groups: {}", names.join(", ")),
                ));
            }
        }
        let on = |g: &str| !cfg.disable.iter().any(|d| d == g);
        let mut globs: Vec<String> =
            GROUPS.iter().filter(|(g, _)| on(g)).flat_map(|(_, p)| p.iter().map(|s| (*s).to_owned())).collect();
        for (i, p) in cfg.paths.iter().enumerate() {
            if p.is_empty() || p.contains('\0') {
                return Err((format!("sensitive.paths[{i}]"), "an empty pattern matches nothing".into()));
            }
            globs.push(p.clone());
        }
        let paths = RegexSet::new(globs.iter().map(|g| glob_regex(g)))
            .map_err(|e| ("sensitive.paths".to_owned(), e.to_string()))?;
        let mut addr_globs: Vec<String> =
            if on("metadata") { METADATA_ADDRS.iter().map(|s| (*s).to_owned()).collect() } else { Vec::new() };
        for (i, a) in cfg.addrs.iter().enumerate() {
            if a.is_empty() {
                return Err((format!("sensitive.addrs[{i}]"), "an empty address matches nothing".into()));
            }
            addr_globs.push(a.clone());
        }
        // Addresses and names are matched whole (`*` matches dots too: `*.internal`).
        let addrs = RegexSet::new(addr_globs.iter().map(|a| format!("^{}$", regex::escape(a).replace("\\*", ".*"))))
            .map_err(|e| ("sensitive.addrs".to_owned(), e.to_string()))?;
        Ok(Self { paths, own: if on("agentmon") { own } else { Vec::new() }, proc: on("proc"), addrs })
    }

    /// Whether a file access by process `pid` touches something sensitive.
    pub fn path(&self, path: &str, pid: Option<u32>) -> bool {
        if self.proc {
            if let Some(rest) = path.strip_prefix("/proc/") {
                if let Some((who, what)) = rest.split_once('/') {
                    if (what == "environ" || what == "mem")
                        && who.bytes().all(|b| b.is_ascii_digit())
                        && !who.is_empty()
                    {
                        return pid.is_none_or(|p| who.parse::<u32>().ok() != Some(p));
                    }
                }
            }
        }
        if self.own.iter().any(|o| path == o || path.strip_prefix(o.as_str()).is_some_and(|r| r.starts_with('/'))) {
            return true;
        }
        self.paths.is_match(path)
    }

    pub fn net(&self, n: &NetSummary) -> bool {
        [n.addr.as_deref(), n.host.as_deref()].into_iter().flatten().any(|a| self.addrs.is_match(a))
    }

    /// Mark the entries of one action's (or agent process') summaries; `pids` are the
    /// processes that made them (their own `/proc/<pid>` files are not sensitive). An entry
    /// already marked stays marked: a summary's fold entry (`(other written paths)`) names no
    /// path of its own, and is marked as it is filled when a sensitive entry is folded into it.
    pub fn mark(&self, files: &mut [FileSummary], net: &mut [NetSummary], pids: &[u32]) {
        for f in files {
            f.sensitive |= self.path(&f.path, None) && !own_proc(&f.path, pids);
        }
        for n in net {
            n.sensitive |= self.net(n);
        }
    }
}

fn own_proc(path: &str, pids: &[u32]) -> bool {
    path.strip_prefix("/proc/")
        .and_then(|r| r.split_once('/'))
        .and_then(|(p, _)| p.parse::<u32>().ok())
        .is_some_and(|p| pids.contains(&p))
}

/// Whether a record's summaries hold a sensitive entry.
pub fn accessed(files: &[FileSummary], net: &[NetSummary]) -> bool {
    files.iter().any(|f| f.sensitive) || net.iter().any(|n| n.sensitive)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> Sensitive {
        Sensitive::new(&SensitiveConfig::default(), vec!["/var/lib/agentmon".into(), "/etc/agentmon".into()])
            .expect("compiles")
    }

    #[test]
    fn built_in_paths() {
        let s = m();
        for p in [
            "/root/.ssh/id_ed25519",
            "/home/u/.ssh/config",
            "/home/u/.ssh/authorized_keys",
            "/etc/shadow",
            "/etc/sudoers",
            "/etc/sudoers.d/90-agent",
            "/srv/app/tls/server.pem",
            "/srv/app/server.key",
            "/tmp/id_rsa",
            "/srv/app/.env",
            "/srv/app/.env.production",
            "/root/.netrc",
            "/home/u/.aws/credentials",
            "/home/u/.config/gcloud/application_default_credentials.json",
            "/root/.kube/config",
            "/root/.docker/config.json",
            "/var/lib/agentmon/signing.key",
            "/var/lib/agentmon",
            "/etc/agentmon/agentmon.toml",
            "/etc/ssh/ssh_host_ed25519_key",
        ] {
            assert!(s.path(p, Some(1)), "{p} is sensitive");
        }
        for p in [
            "/etc/passwd",
            "/etc/hosts",
            "/home/u/.aws/config.bak",
            "/srv/app/environment.txt",
            "/srv/app/keys.txt",
            "/srv/app/my.env.example.txt",
            "/var/lib/agentmonitor/x",
            "/etc/ssh/ssh_config",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
        ] {
            assert!(!s.path(p, Some(1)), "{p} is not sensitive");
        }
    }

    #[test]
    fn other_processes_environ_and_mem() {
        let s = m();
        assert!(s.path("/proc/1/environ", Some(42)));
        assert!(s.path("/proc/1/mem", Some(42)));
        assert!(!s.path("/proc/42/environ", Some(42)), "a process reading its own environment");
        assert!(!s.path("/proc/self/environ", Some(42)));
        assert!(!s.path("/proc/1/status", Some(42)));
        let mut files = vec![
            FileSummary {
                path: "/proc/7/environ".into(),
                access: "read".into(),
                result: "ok".into(),
                count: 1,
                noise: false,
                sensitive: false,
            },
            FileSummary {
                path: "/proc/8/environ".into(),
                access: "read".into(),
                result: "ok".into(),
                count: 1,
                noise: false,
                sensitive: false,
            },
        ];
        s.mark(&mut files, &mut [], &[7]);
        assert!(!files[0].sensitive && files[1].sensitive);
        assert!(accessed(&files, &[]));
    }

    #[test]
    fn configured_and_disabled() {
        let cfg = SensitiveConfig {
            paths: vec!["/srv/secrets/**".into(), "*.kdbx".into()],
            addrs: vec!["*.vault.internal".into(), "10.0.0.5".into()],
            disable: vec!["keys".into(), "metadata".into()],
        };
        let s = Sensitive::new(&cfg, Vec::new()).expect("compiles");
        assert!(s.path("/srv/secrets/db/password", None));
        assert!(s.path("/home/u/db.kdbx", None));
        assert!(!s.path("/srv/app/server.key", None), "keys disabled");
        assert!(s.path("/root/.ssh/id_rsa", None), "ssh still on");
        let net = |addr: &str, host: Option<&str>| NetSummary {
            op: "connect".into(),
            family: "ipv4".into(),
            addr: Some(addr.into()),
            port: Some(443),
            host: host.map(Into::into),
            result: "ok".into(),
            count: 1,
            sensitive: false,
        };
        assert!(s.net(&net("10.1.1.1", Some("a.vault.internal"))));
        assert!(s.net(&net("10.0.0.5", None)));
        assert!(!s.net(&net("10.0.0.50", None)));
        assert!(!s.net(&net("169.254.169.254", None)), "metadata disabled");
        assert!(m().net(&net("169.254.169.254", None)));
        let bad = SensitiveConfig { disable: vec!["sshh".into()], ..SensitiveConfig::default() };
        let e = Sensitive::new(&bad, Vec::new()).expect_err("unknown group");
        assert_eq!(e.0, "sensitive.disable[0]");
        assert!(e.1.contains("ssh, shadow"), "{}", e.1);
    }

    #[test]
    fn globs() {
        assert_eq!(glob_regex("/a/*.b"), "^/a/[^/]*\\.b$");
        assert_eq!(glob_regex("x?"), "(?:^|/)x[^/]$");
        let r = regex::Regex::new(&glob_regex("/**/.ssh/**")).expect("re");
        assert!(r.is_match("/.ssh/k") && r.is_match("/a/b/.ssh/k/l") && !r.is_match("/a/.sshx/k"));
    }
}
