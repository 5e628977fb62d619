//! How kernel bytes become text: lossless escaping and shell quoting.
//!
//! Stored strings (argv, paths) are UTF-8. A backslash is written `\\`, and NUL and every byte
//! that is not part of valid UTF-8 are written `\xNN` (`PostgreSQL` text and jsonb cannot hold
//! NUL), so the original bytes can always be recovered with [`unescape`].

use std::fmt::Write as _;

/// Escape arbitrary bytes into a lossless UTF-8 string (see the module docs).
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else if c == '\0' {
                out.push_str("\\x00");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// Reverse of [`escape_bytes`]. Returns `None` for text that `escape_bytes` cannot produce.
pub fn unescape(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut it = text.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match it.next()? {
            '\\' => out.push(b'\\'),
            'x' => {
                let hex: String = [it.next()?, it.next()?].iter().collect();
                out.push(u8::from_str_radix(&hex, 16).ok()?);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Split a NUL-separated argv area into escaped arguments. A trailing NUL ends the last
/// argument; without it (truncated capture) the partial last argument is kept.
pub fn split_argv(area: &[u8]) -> Vec<String> {
    if area.is_empty() {
        return Vec::new();
    }
    let area = area.strip_suffix(&[0]).unwrap_or(area);
    area.split(|&b| b == 0).map(escape_bytes).collect()
}

/// One argument quoted for a POSIX shell, only where needed.
pub fn shell_quote(arg: &str) -> String {
    let safe = !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(&b));
    if safe {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// A whole argv as a copy-pasteable shell command line.
/// At most `max` characters of `s`, with `…` when cut.
pub fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

pub fn shell_join(argv: &[String]) -> String {
    argv.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ")
}

/// Whether `c` changes how the text around it reads without showing itself: the C0 and C1
/// controls and DEL (Unicode category Cc); the format characters (Cf: bidi embeddings,
/// overrides and isolates such as U+202E, the zero-width space and joiners, the byte-order mark,
/// invisible operators, soft hyphen, tag characters); the line and paragraph separators; and
/// the Hangul fillers, which draw as blank letters.
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c as u32,
            0xAD | 0x600..=0x605
                | 0x61C
                | 0x6DD
                | 0x70F
                | 0x890..=0x891
                | 0x8E2
                | 0x115F..=0x1160
                | 0x180E
                | 0x200B..=0x200F
                | 0x2028..=0x202E
                | 0x2060..=0x2064
                | 0x2066..=0x206F
                | 0x3164
                | 0xFEFF
                | 0xFFA0
                | 0xFFF9..=0xFFFB
                | 0x110BD
                | 0x110CD
                | 0x13430..=0x1343F
                | 0x1BCA0..=0x1BCA3
                | 0x1D173..=0x1D17A
                | 0xE0001
                | 0xE0020..=0xE007F
        )
}

/// Text for a person to read: every [`is_hidden`] character written as an escape, an ASCII
/// one as `\xNN` and any other as `\u{N}` (its code point in hex), so a crafted name cannot
/// move the cursor, clear lines, reorder what follows it (U+202E) or hide a character.
pub fn visible(s: &str) -> String {
    if !s.chars().any(is_hidden) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !is_hidden(c) {
            out.push(c);
        } else if c.is_ascii() {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    out
}

/// JSON text for a person to read: every [`is_hidden`] character that JSON itself leaves
/// raw (DEL, C1 controls, format characters, separators) written as a `\uXXXX` escape (a
/// surrogate pair above U+FFFF). A JSON parser reads back the same string; a terminal shows the
/// escape. Such characters can only be inside strings, so the text stays valid JSON.
pub fn json_visible(json: &str) -> String {
    if !json.chars().any(|c| is_hidden(c) && c > '\x1f') {
        return json.to_owned();
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if is_hidden(c) && c > '\x1f' {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{u:04x}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = std::fmt::Write::write_fmt(&mut s, format_args!("{b:02x}"));
    }
    s
}

/// The bytes of a hex string, if it is one.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// A duration for people: `15ms`, `1.5s`, `1m05s`, `2h01m`, or `-` when unknown.
#[expect(clippy::cast_precision_loss, reason = "only milliseconds under 60 000 become f64, exactly")]
pub fn duration(ms: Option<i64>) -> String {
    let Some(ms) = ms else { return "-".into() };
    match ms {
        ..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_is_lossless() {
        let samples: [&[u8]; 6] = [b"plain", b"back\\slash", b"\xff\xfe bad", "ünï".as_bytes(), b"\\x41", b"nul\0byte"];
        for s in samples {
            let e = escape_bytes(s);
            assert_eq!(unescape(&e).as_deref(), Some(s), "{e}");
        }
        assert_eq!(escape_bytes(b"a\xffb"), "a\\xffb");
        assert_eq!(escape_bytes(b"a\\b"), "a\\\\b");
        assert_eq!(escape_bytes(b"a\0b"), "a\\x00b", "no NUL reaches PostgreSQL");
    }

    #[test]
    fn argv_split_and_quote() {
        assert_eq!(split_argv(b"echo\0a\0b c\0"), ["echo", "a", "b c"]);
        assert_eq!(split_argv(b"echo\0trunc"), ["echo", "trunc"]);
        assert_eq!(split_argv(b"x\0\0"), ["x", ""]);
        assert!(split_argv(b"").is_empty());
        let argv: Vec<String> = ["bash", "-c", "git log | head", "it's", ""].map(String::from).into();
        assert_eq!(shell_join(&argv), "bash -c 'git log | head' 'it'\\''s' ''");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(Some(15)), "15ms");
        assert_eq!(duration(Some(1500)), "1.5s");
        assert_eq!(duration(Some(65_000)), "1m05s");
        assert_eq!(duration(Some(7_260_000)), "2h01m");
        assert_eq!(duration(None), "-");
    }
}
