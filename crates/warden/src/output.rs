//! Tables for people, JSON for scripts.

use clap::ValueEnum;
use comfy_table::{presets, Table};
use serde::Serialize;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// Text from others (node labels, user names, commands, reasons, server
/// messages) made safe for a terminal: control characters (escape
/// sequences, carriage returns, newlines) and bidirectional overrides are
/// shown escaped, never interpreted.
pub fn safe(s: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| {
        c.is_control()
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}')
    };
    if !s.chars().any(bad) {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(
        s.chars()
            .map(|c| {
                if bad(c) {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// Like [`safe`], keeping line breaks: for multi-line messages.
pub fn safe_lines(s: &str) -> String {
    s.split('\n')
        .map(|l| safe(l).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A borderless table, kubectl style; every cell goes through [`safe`].
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header(headers.iter().map(|h| h.to_uppercase()));
    for r in rows {
        t.add_row(r.iter().map(|c| safe(c).into_owned()));
    }
    // comfy-table pads the first column with a space; trim each line.
    t.to_string()
        .lines()
        .map(|l| l.trim_end().strip_prefix(' ').unwrap_or(l.trim_end()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The proxy's port when `--proxy` names only a host.
pub const DEFAULT_PROXY_PORT: u16 = 3080;

/// `--proxy HOST[:PORT]`: the port defaults to 3080 (IPv6 as `[::1]` or bare).
pub fn proxy_addr(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("give the proxy as HOST or HOST:PORT".into());
    }
    if s.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(s.to_string());
    }
    if let Ok(ip) = s.parse::<std::net::Ipv6Addr>() {
        return Ok(format!("[{ip}]:{DEFAULT_PROXY_PORT}"));
    }
    if s.ends_with(']') || !s.contains(':') {
        return Ok(format!("{s}:{DEFAULT_PROXY_PORT}"));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => Ok(s.to_string()),
        _ => Err(format!("{s:?} is not HOST or HOST:PORT")),
    }
}

pub fn json<T: Serialize>(v: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(v)?)
}

/// A unix time as `2026-11-21 14:03 UTC`.
pub fn time(unix: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| unix.to_string())
}

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The one id among `ids` that `given` names, in full or by a prefix, as
/// git takes short hashes; errors say what to do (`what`: "request", and
/// `listing`: the command that lists them).
pub fn unique_prefix<'a>(
    given: &str,
    ids: impl IntoIterator<Item = &'a str>,
    what: &str,
    listing: &str,
) -> anyhow::Result<String> {
    let ids: Vec<&str> = ids.into_iter().collect();
    if ids.contains(&given) {
        return Ok(given.to_string());
    }
    let matches: Vec<&str> = ids.into_iter().filter(|id| id.starts_with(given)).collect();
    match matches.as_slice() {
        [one] if !given.is_empty() => Ok(one.to_string()),
        [] | [_] => anyhow::bail!("no {what} {given:?}; '{listing}' lists them"),
        many => anyhow::bail!(
            "{given:?} is the start of {} {what} ids ({}); give more of it",
            many.len(),
            many.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_port_defaults_to_3080() {
        assert_eq!(
            proxy_addr("proxy.example.com").unwrap(),
            "proxy.example.com:3080"
        );
        assert_eq!(
            proxy_addr("proxy.example.com:443").unwrap(),
            "proxy.example.com:443"
        );
        assert_eq!(proxy_addr("127.0.0.1").unwrap(), "127.0.0.1:3080");
        assert_eq!(proxy_addr("[::1]").unwrap(), "[::1]:3080");
        assert_eq!(proxy_addr("::1").unwrap(), "[::1]:3080");
        assert_eq!(proxy_addr("[::1]:3081").unwrap(), "[::1]:3081");
        assert!(proxy_addr("host:notaport").is_err());
        assert!(proxy_addr("").is_err());
    }

    #[test]
    fn terminal_controls_are_shown_not_run() {
        assert_eq!(safe("db-1"), "db-1");
        let hostile = "evil\x1b]0;pwned\x07\r\nroot\u{202e}txt";
        let shown = safe(hostile);
        assert!(!shown.chars().any(|c| c.is_control()), "{shown}");
        assert!(
            shown.contains("\\u{1b}") && shown.contains("\\u{202e}"),
            "{shown}"
        );
        let t = table(&["name"], vec![vec![hostile.into()]]);
        assert!(!t.contains('\x1b') && !t.contains('\r'), "{t:?}");
    }
}
