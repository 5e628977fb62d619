//! The crate's layout rule (see `src/lib.rs` and docs/contributing.md), checked on its own
//! sources: arrows point down (nothing at the root imports from `daemon/` or `cli/`, and
//! `daemon/` never imports from `cli/`), no two modules import each other however long the
//! circle, and SQL is written only under `store/`.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// Every module of the crate (`daemon::sessions`, `chain`, ...) and its source file.
fn modules() -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("src readable").flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files
        .into_iter()
        .filter_map(|f| {
            let rel = f.strip_prefix(&src).expect("under src").with_extension("");
            let parts: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
            let name = match parts.last().map(String::as_str) {
                Some("lib" | "main") if parts.len() == 1 => return None,
                Some("mod") => parts[..parts.len() - 1].join("::"),
                _ => parts.join("::"),
            };
            Some((name, f))
        })
        .collect()
}

/// The source without comments, string contents and `#[cfg(test)] mod tests` (tests may reach
/// anywhere).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("source readable");
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                out.push('"');
                let mut escaped = false;
                for c in chars.by_ref() {
                    if !escaped && c == '"' {
                        break;
                    }
                    escaped = !escaped && c == '\\';
                }
                out.push('"');
            }
            c => out.push(c),
        }
    }
    out
}

/// The paths a source names from `crate::` or `super::`, with `use` groups expanded, made
/// absolute (`crate::a::b`, as `a::b`).
fn references(module: &str, code: &str) -> BTreeSet<String> {
    fn expand(prefix: &str, group: &str, out: &mut Vec<String>) {
        let (mut depth, mut start) = (0, 0);
        let bytes: Vec<char> = group.chars().collect();
        let mut items = Vec::new();
        for (i, c) in bytes.iter().enumerate() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(bytes[start..i].iter().collect::<String>());
                    start = i + 1;
                }
                _ => {}
            }
        }
        items.push(bytes[start..].iter().collect());
        for item in items {
            let item: String = item.chars().filter(|c| !c.is_whitespace()).collect();
            if item.is_empty() {
                continue;
            }
            match item.split_once('{') {
                Some((head, rest)) => {
                    let head = head.trim_end_matches("::");
                    let p = if head.is_empty() { prefix.to_owned() } else { format!("{prefix}::{head}") };
                    expand(&p, rest.strip_suffix('}').unwrap_or(rest), out);
                }
                None => out.push(format!("{prefix}::{}", item.split(" as ").next().unwrap_or(&item))),
            }
        }
    }
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find(['c', 's']) {
        let tail = &rest[i..];
        let boundary = i == 0 || !rest[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_');
        let root = ["crate::", "super::"].into_iter().find(|r| tail.starts_with(r));
        match root.filter(|_| boundary) {
            Some(r) => {
                let after = &tail[r.len()..];
                let base = &r[..r.len() - 2];
                if after.starts_with('{') {
                    let end = matching_brace(after);
                    expand(base, &after[1..end], &mut found);
                    rest = &after[end..];
                } else {
                    let mut path = base.to_owned();
                    let mut t = after;
                    loop {
                        let len = t.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(t.len());
                        path.push_str("::");
                        path.push_str(&t[..len]);
                        t = &t[len..];
                        match t.strip_prefix("::") {
                            Some(n) if n.starts_with('{') => {
                                let end = matching_brace(n);
                                expand(&path, &n[1..end], &mut found);
                                t = &n[end..];
                                path.clear();
                                break;
                            }
                            Some(n) if n.starts_with(|c: char| c.is_alphabetic() || c == '_') => t = n,
                            _ => break,
                        }
                    }
                    if !path.is_empty() {
                        found.push(path);
                    }
                    rest = t;
                }
            }
            None => rest = &tail[1..],
        }
    }
    // `super` of module `a::b` (`a/b.rs` or `a/b/mod.rs`) is `a`; of `a` it is the root.
    let sup = module.rsplit_once("::").map_or("", |(parent, _)| parent);
    found
        .into_iter()
        .filter_map(|p| {
            let p = if let Some(r) = p.strip_prefix("crate::") {
                r.to_owned()
            } else {
                let r = p.strip_prefix("super::")?;
                if sup.is_empty() {
                    r.to_owned()
                } else {
                    format!("{sup}::{r}")
                }
            };
            Some(p)
        })
        .collect()
}

fn matching_brace(s: &str) -> usize {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    s.len()
}

/// module → the other modules it names (the longest module prefix of each path).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules();
    mods.iter()
        .map(|(m, f)| {
            let targets = references(m, &code(f))
                .into_iter()
                .filter_map(|p| {
                    let parts: Vec<&str> = p.split("::").collect();
                    (1..=parts.len()).rev().map(|n| parts[..n].join("::")).find(|c| mods.contains_key(c))
                })
                .filter(|t| t != m)
                .collect();
            (m.clone(), targets)
        })
        .collect()
}

fn top(m: &str) -> &str {
    m.split("::").next().unwrap_or(m)
}

#[test]
fn arrows_point_down() {
    let mut up = Vec::new();
    for (m, targets) in graph() {
        for t in targets {
            let wrong = match top(&m) {
                "cli" => false,
                "daemon" => top(&t) == "cli",
                _ => matches!(top(&t), "daemon" | "cli"),
            };
            if wrong {
                up.push(format!("{m} -> {t}"));
            }
        }
    }
    assert!(up.is_empty(), "imports from a lower layer up into daemon/ or cli/: {up:#?}");
}

#[test]
fn no_import_circles() {
    // A module and its own submodules (declared in it) are one unit here; every other
    // circle, of any length, is an error.
    let g = graph();
    let related = |a: &str, b: &str| a.starts_with(&format!("{b}::")) || b.starts_with(&format!("{a}::"));
    let edges: BTreeMap<&str, Vec<&str>> = g
        .iter()
        .map(|(m, ts)| (m.as_str(), ts.iter().map(String::as_str).filter(|t| !related(m, t)).collect()))
        .collect();
    let mut circles = Vec::new();
    for start in edges.keys() {
        // Depth-first from `start`, looking for a way back to it.
        let mut stack = vec![(*start, vec![*start])];
        let mut seen = BTreeSet::new();
        while let Some((m, path)) = stack.pop() {
            for &t in edges.get(m).into_iter().flatten() {
                if t == *start {
                    circles.push(path.join(" -> ") + " -> " + start);
                } else if seen.insert(t) {
                    let mut p = path.clone();
                    p.push(t);
                    stack.push((t, p));
                }
            }
        }
    }
    assert!(circles.is_empty(), "import circles: {circles:#?}");
}

#[test]
fn sql_lives_in_store() {
    let outside: Vec<String> = modules()
        .into_iter()
        .filter(|(m, _)| top(m) != "store")
        .filter(|(_, f)| {
            let c = code(f);
            ["sqlx::query", "query_as(", "query_scalar(", "QueryBuilder"].iter().any(|s| c.contains(s))
        })
        .map(|(m, _)| m)
        .collect();
    assert!(outside.is_empty(), "SQL outside store/: {outside:?}");
}

#[test]
fn the_checker_sees_imports() {
    // The parser behind the tests above, on a known sample: if it found nothing, they could
    // not fail.
    let refs = references(
        "daemon::sessions",
        "use super::{handoff, store::lock, Daemon};\nuse crate::{cgroup, record::{Output, SessionEnd}};\nfn f() { crate::text::hex(x); }",
    );
    for want in ["daemon::handoff", "daemon::store::lock", "daemon::Daemon", "cgroup", "record::Output", "text::hex"] {
        assert!(refs.contains(want), "{want} missing from {refs:?}");
    }
    let g = graph();
    assert!(g["daemon::sessions"].contains("cgroup"), "{:?}", g["daemon::sessions"]);
    assert!(g["cli::verify"].contains("verify"), "{:?}", g["cli::verify"]);
}
