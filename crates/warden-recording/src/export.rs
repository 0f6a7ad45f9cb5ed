//! Exports: asciicast v2 (for `asciinema play`) and plain text (for grep),
//! written as events come from [`crate::read`], so a long session exports
//! in the memory of one chunk.

use crate::{Decoded, Event, EventKind, Header, Item};
use std::io::{self, Write};

/// Writes asciicast v2: the header line, then output and resize events
/// (markers stay out: older players reject event types they do not know).
/// The first write error is kept and returned by [`Self::finish`].
pub struct AsciicastWriter<W: Write> {
    out: W,
    error: Option<io::Error>,
}

impl<W: Write> AsciicastWriter<W> {
    pub fn new(out: W) -> Self {
        AsciicastWriter { out, error: None }
    }

    pub fn item(&mut self, item: &Item<'_>) {
        match item {
            Item::Header(h) => self.header(h),
            Item::Event(e) => self.event(e),
        }
    }

    pub fn header(&mut self, h: &Header) {
        self.line(serde_json::to_string(h).expect("headers serialize"));
    }

    pub fn event(&mut self, e: &Event) {
        if e.kind != EventKind::Marker {
            self.line(
                serde_json::to_string(&(e.time, e.kind.code(), &e.data)).expect("events serialize"),
            );
        }
    }

    fn line(&mut self, mut text: String) {
        if self.error.is_none() {
            text.push('\n');
            if let Err(e) = self.out.write_all(text.as_bytes()) {
                self.error = Some(e);
            }
        }
    }

    /// The writer, flushed; or the first write error.
    pub fn finish(mut self) -> io::Result<W> {
        finish(&mut self.out, self.error.take())?;
        Ok(self.out)
    }
}

/// Writes the output as plain text: escape sequences removed, `\r\n` as
/// `\n`, markers as `# marker` lines of their own. The first write error
/// is kept and returned by [`Self::finish`].
pub struct TextWriter<W: Write> {
    out: W,
    error: Option<io::Error>,
    state: Esc,
    /// Something was written and the last of it was not a newline.
    mid_line: bool,
}

impl<W: Write> TextWriter<W> {
    pub fn new(out: W) -> Self {
        TextWriter {
            out,
            error: None,
            state: Esc::None,
            mid_line: false,
        }
    }

    pub fn item(&mut self, item: &Item<'_>) {
        if let Item::Event(e) = item {
            self.event(e);
        }
    }

    pub fn event(&mut self, e: &Event) {
        let mut text = String::new();
        match e.kind {
            EventKind::Output => {
                for c in e.data.chars() {
                    self.state = match (self.state, c) {
                        (Esc::None, '\u{1b}') => Esc::Start,
                        (Esc::None, '\r') => Esc::None,
                        (Esc::None, c) if c == '\n' || c == '\t' || !c.is_control() => {
                            text.push(c);
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
                if self.mid_line {
                    text.push('\n');
                }
                text.push_str(&format!("# {}\n", e.data));
            }
            EventKind::Resize => {}
        }
        if let Some(last) = text.chars().last() {
            self.mid_line = last != '\n';
        }
        if self.error.is_none() && !text.is_empty() {
            if let Err(e) = self.out.write_all(text.as_bytes()) {
                self.error = Some(e);
            }
        }
    }

    /// The writer, flushed; or the first write error.
    pub fn finish(mut self) -> io::Result<W> {
        finish(&mut self.out, self.error.take())?;
        Ok(self.out)
    }
}

fn finish(out: &mut impl Write, error: Option<io::Error>) -> io::Result<()> {
    match error {
        Some(e) => Err(e),
        None => out.flush(),
    }
}

/// A decoded recording as asciicast v2 (see [`AsciicastWriter`]).
pub fn asciicast(d: &Decoded) -> String {
    let mut w = AsciicastWriter::new(Vec::new());
    w.header(&d.header);
    d.events.iter().for_each(|e| w.event(e));
    String::from_utf8(w.finish().expect("memory takes every write")).expect("JSON is UTF-8")
}

/// A decoded recording's output as plain text (see [`TextWriter`]).
pub fn plain_text(d: &Decoded) -> String {
    let mut w = TextWriter::new(Vec::new());
    d.events.iter().for_each(|e| w.event(e));
    String::from_utf8(w.finish().expect("memory takes every write")).expect("text is UTF-8")
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
