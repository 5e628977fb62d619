//! Human output: aligned tables, local times, readable durations.

use chrono::{DateTime, Local, Utc};

/// Control characters shown as `\xNN`, so a crafted name cannot move the cursor, clear
/// lines or break the table.
pub fn visible(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars().map(|c| if c.is_control() { format!("\\x{:02x}", c as u32) } else { c.to_string() }).collect()
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
}
