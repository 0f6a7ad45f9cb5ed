//! Exports: asciicast v2 (for `asciinema play`) and plain text (for grep).

use crate::{Decoded, EventKind};

/// asciicast v2: the header line, then output and resize events (markers
/// stay out: older players reject event types they do not know).
pub fn asciicast(d: &Decoded) -> String {
    let mut out = serde_json::to_string(&d.header).expect("headers serialize");
    out.push('\n');
    for e in &d.events {
        if e.kind == EventKind::Marker {
            continue;
        }
        out.push_str(
            &serde_json::to_string(&(e.time, e.kind.code(), &e.data)).expect("events serialize"),
        );
        out.push('\n');
    }
    out
}

/// The output as plain text: escape sequences removed, `\r\n` as `\n`,
/// markers as `# marker` lines of their own.
pub fn plain_text(d: &Decoded) -> String {
    let mut out = String::new();
    let mut state = Esc::None;
    for e in &d.events {
        match e.kind {
            EventKind::Output => {
                for c in e.data.chars() {
                    state = match (state, c) {
                        (Esc::None, '\u{1b}') => Esc::Start,
                        (Esc::None, '\r') => Esc::None,
                        (Esc::None, c) if c == '\n' || c == '\t' || !c.is_control() => {
                            out.push(c);
                            Esc::None
                        }
                        (Esc::None, _) => Esc::None,
                        (Esc::Start, '[') => Esc::Csi,
                        (Esc::Start, ']') => Esc::Osc,
                        (Esc::Start, _) => Esc::None,
                        (Esc::Csi, c) if ('@'..='~').contains(&c) => Esc::None,
                        (Esc::Csi, _) => Esc::Csi,
                        (Esc::Osc, '\u{7}') => Esc::None,
                        (Esc::Osc, '\u{1b}') => Esc::Start,
                        (Esc::Osc, _) => Esc::Osc,
                    };
                }
            }
            EventKind::Marker => {
                if !out.is_empty() && !out.ends_with('\n') {
                    out.push('\n');
                }
                out.push_str(&format!("# {}\n", e.data));
            }
            EventKind::Resize => {}
        }
    }
    out
}

#[derive(Clone, Copy)]
enum Esc {
    None,
    Start,
    Csi,
    Osc,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, Encoder, Header};

    #[test]
    fn text_strips_escapes_and_asciicast_keeps_timing() {
        let mut e = Encoder::new(&Header {
            version: 2,
            width: 80,
            height: 24,
            ..Default::default()
        });
        e.marker(0.0, "exec: echo");
        e.output(0.5, b"\x1b]0;title\x07\x1b[1;32mhello\x1b[0m\r\nworld\r\n");
        e.resize(1.0, 120, 40);
        let d = decode(&e.flush().unwrap()).unwrap();
        assert_eq!(plain_text(&d), "# exec: echo\nhello\nworld\n");
        let cast = asciicast(&d);
        let lines: Vec<&str> = cast.lines().collect();
        assert_eq!(lines.len(), 3, "{cast}");
        assert!(lines[0].contains("\"version\":2"));
        assert!(lines[1].starts_with("[0.5,\"o\""));
        assert_eq!(lines[2], "[1.0,\"r\",\"120x40\"]");
    }
}
