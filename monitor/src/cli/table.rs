//! Human output: aligned tables, local times, readable durations.

use chrono::{DateTime, Local, Utc};

pub use crate::text::visible;

/// One value as a `--json` line: hidden characters (bidi overrides, zero-width characters, C1
/// controls, DEL) as `\uXXXX` escapes, so the line reads safely in a terminal and parses to
/// the same value (`crate::text::json_visible`).
pub fn json_line<T: serde::Serialize + ?Sized>(v: &T) -> serde_json::Result<String> {
    Ok(crate::text::json_visible(&serde_json::to_string(v)?))
}

/// Print rows as left-aligned columns separated by two spaces.
pub fn print(headers: &[&str], rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(|c| visible(c)).collect()).collect();
    let rows = &rows;
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            s.push_str(c);
            if i < last {
                s.push_str(&" ".repeat(w - c.chars().count() + 2));
            }
        }
        println!("{}", s.trim_end());
    };
    line(headers.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

pub fn local_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&Local).format("%Y-%m-%d %H:%M:%S").to_string()
}

pub fn opt_time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "-".into(), local_time)
}

/// `0`, `3`, `SIGKILL`, or `-` while running.
pub fn status(exit_code: Option<i32>, signal: Option<i32>) -> String {
    match (exit_code, signal) {
        (_, Some(s)) => signal_name(s),
        (Some(c), None) => c.to_string(),
        (None, None) => "-".into(),
    }
}

pub fn signal_name(sig: i32) -> String {
    const NAMES: [&str; 32] = [
        "0",
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    NAMES.get(sig as usize).map_or_else(|| format!("SIG{sig}"), |s| (*s).to_owned())
}

/// Shorten for a table cell.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// A byte count in binary units: `512 B`, `1.5 KiB`, `64.0 MiB`.
#[expect(clippy::cast_precision_loss, reason = "shown to one decimal: f64's 52 bits lose nothing visible")]
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A cost in US dollars: `$1.25`, `$0.0042` below a cent, `~` first when some of it is an
/// estimate (from the config's price table), `-` when none was reported.
pub fn usd(cost: Option<f64>, estimated: bool) -> String {
    let Some(c) = cost else { return "-".into() };
    let mark = if estimated { "~" } else { "" };
    if c != 0.0 && c.abs() < 0.01 {
        format!("{mark}${c:.4}")
    } else {
        format!("{mark}${c:.2}")
    }
}

/// A token count: `-` for none, `950`, `12.3k`, `4.1M`.
#[expect(clippy::cast_precision_loss, reason = "shown to one decimal")]
pub fn tokens(n: i64) -> String {
    match n {
        ..=0 => "-".into(),
        1..=9_999 => n.to_string(),
        10_000..=999_949 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// The last 8 characters of an id, as the tables show it. Ids are `UUIDv7`, whose leading digits
/// are a timestamp shared by everything created in the same minute and whose trailing digits are
/// random; the query commands accept any unique prefix or suffix.
pub fn short_id(id: &uuid::Uuid) -> String {
    id.to_string()[28..].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_durations_and_statuses() {
        assert_eq!(status(Some(3), None), "3");
        assert_eq!(status(None, Some(9)), "SIGKILL");
        assert_eq!(status(None, None), "-");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(visible("a\x1b[2Jb\nc"), "a\\x1b[2Jb\\x0ac");
    }

    #[test]
    fn costs_and_token_counts() {
        assert_eq!(usd(None, false), "-");
        assert_eq!(usd(Some(0.0), false), "$0.00");
        assert_eq!(usd(Some(1.254), false), "$1.25");
        assert_eq!(usd(Some(0.00421), true), "~$0.0042");
        assert_eq!(usd(Some(12.5), true), "~$12.50");
        assert_eq!(tokens(0), "-");
        assert_eq!(tokens(950), "950");
        assert_eq!(tokens(12_345), "12.3k");
        assert_eq!(tokens(4_100_000), "4.1M");
    }

    /// Every class of hidden character, in a table cell and in a `--json` line.
    #[test]
    fn hidden_characters_are_escaped_in_tables_and_json() {
        let cells = [
            ("bidi override", "a\u{202e}gpj.exe", "a\\u{202e}gpj.exe", "a\\u202egpj.exe"),
            ("bidi isolate", "a\u{2066}b\u{2069}", "a\\u{2066}b\\u{2069}", "a\\u2066b\\u2069"),
            ("zero-width space", "rm\u{200b} -rf", "rm\\u{200b} -rf", "rm\\u200b -rf"),
            ("zero-width joiner, BOM", "a\u{200d}\u{feff}", "a\\u{200d}\\u{feff}", "a\\u200d\\ufeff"),
            ("C1 CSI", "x\u{9b}2Jy", "x\\u{9b}2Jy", "x\\u009b2Jy"),
            ("DEL", "a\u{7f}b", "a\\x7fb", "a\\u007fb"),
            ("C0 escape", "a\u{1b}[2J", "a\\x1b[2J", "a\\u001b[2J"),
            ("tag character", "a\u{e0041}", "a\\u{e0041}", "a\\udb40\\udc41"),
            ("line separator", "a\u{2028}b", "a\\u{2028}b", "a\\u2028b"),
        ];
        for (what, raw, cell, json) in cells {
            assert_eq!(visible(raw), cell, "{what} in a table");
            let line = json_line(&serde_json::json!({ "v": raw })).expect("json");
            assert_eq!(line, format!("{{\"v\":\"{json}\"}}"), "{what} in --json");
            assert!(line.chars().all(|c| c.is_ascii() && !c.is_control()), "{what}: {line}");
            let back: serde_json::Value = serde_json::from_str(&line).expect("parses");
            assert_eq!(back["v"], raw, "{what}: the JSON reads back the same string");
        }
        // Ordinary text is left alone, non-ASCII letters and emoji included.
        for s in ["plain", "ünï 文字 ❤\u{fe0f}", "tab-free"] {
            assert_eq!(visible(s), s);
            assert_eq!(json_line(s).expect("json"), format!("\"{s}\""));
        }
    }
}
