//! `warden recordings ls` and `warden play`: find and replay recorded
//! sessions (auditors only; every fetch is audited).

use crate::output::{self, Format};
use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use std::io::Write;
use std::time::Duration;
use tokio::sync::mpsc;
use warden_client::ProfileStore;
use warden_recording::{decode, AsciicastWriter, Decoded, EventKind, TextWriter};
use warden_types::api::RecordingInfo;
use warden_types::api::RecordingQuery;
use warden_types::duration::HumanDuration;
use warden_types::endpoints;

/// Largest recording fetched.
const MAX_FETCH: usize = 256 << 20;
/// How far the arrow keys seek.
const SEEK: f64 = 5.0;

#[derive(Subcommand)]
pub enum RecordingsCommand {
    /// Recorded sessions, newest first.
    Ls {
        #[arg(long)]
        user: Option<String>,
        /// Node name or id.
        #[arg(long)]
        node: Option<String>,
        /// Only sessions started within this long, e.g. 24h.
        #[arg(long)]
        since: Option<HumanDuration>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum PlayFormat {
    /// Replay in this terminal with the original timing.
    #[default]
    Terminal,
    /// asciicast v2, for `asciinema play`.
    Asciicast,
    /// The output as plain text (escape sequences removed), for grep.
    Text,
}

#[derive(Args)]
pub struct PlayArgs {
    /// Session id ('warden recordings ls').
    session_id: String,
    /// Playback speed factor.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Shorten pauses longer than a second to one second.
    #[arg(long)]
    skip_idle: bool,
    #[arg(long, value_enum, default_value_t)]
    format: PlayFormat,
}

fn api() -> anyhow::Result<warden_client::ApiClient> {
    let store = ProfileStore::new(ProfileStore::default_home()?);
    let Some(p) = store.current()? else {
        bail!("not logged in; run 'warden login'");
    };
    Ok(warden_client::login::auth_client(&store, &p)?)
}

pub async fn recordings(c: RecordingsCommand) -> anyhow::Result<()> {
    let RecordingsCommand::Ls {
        user,
        node,
        since,
        format,
    } = c;
    let query = RecordingQuery {
        user,
        node,
        since: since.map(|s| s.before(output::now())),
    };
    let list: Vec<RecordingInfo> = api()?.call(&endpoints::RECORDINGS, &query).await?;
    match format {
        Format::Json => println!("{}", output::json(&list)?),
        Format::Text => println!(
            "{}",
            output::table(
                &["session", "user", "login", "node", "start", "duration", "size", "command"],
                list.iter()
                    .map(|r| vec![
                        r.session_id.clone(),
                        r.user.clone(),
                        r.login.clone(),
                        r.node_name.clone(),
                        output::time(r.start),
                        format!(
                            "{:.1}s{}",
                            r.duration_ms as f64 / 1000.0,
                            if r.truncated { " (cut)" } else { "" }
                        ),
                        format!("{} KiB", r.size.div_ceil(1024)),
                        r.command.clone(),
                    ])
                    .collect()
            )
        ),
    }
    Ok(())
}

/// A reader that stopped reading (`| head`) is not an error.
fn written<W>(r: std::io::Result<W>) -> anyhow::Result<()> {
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write the recording out")
        }
        _ => Ok(()),
    }
}

pub async fn play(mut a: PlayArgs) -> anyhow::Result<()> {
    if !(a.speed > 0.0 && a.speed <= 1000.0) {
        bail!("--speed must be between 0 and 1000");
    }
    // A session id may be shortened, as in 'recordings ls' output.
    if uuid::Uuid::parse_str(&a.session_id).is_err()
        && a.session_id.len() >= 4
        && a.session_id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-')
    {
        let list: Vec<RecordingInfo> = api()?
            .call(&endpoints::RECORDINGS, &RecordingQuery::default())
            .await?;
        a.session_id = output::unique_prefix(
            &a.session_id,
            list.iter().map(|r| r.session_id.as_str()),
            "recording",
            "warden recordings ls",
        )?;
    }
    let download = api()?
        .download(
            &endpoints::RECORDING,
            &endpoints::RECORDING.at(&[&a.session_id]),
        )
        .await;
    let mut download = match download {
        // A database session has no recording: its statements are in the
        // audit log.
        Err(warden_client::ClientError::Api { status: 404, .. })
            if uuid::Uuid::parse_str(&a.session_id).is_ok() =>
        {
            return play_db(&a.session_id, a.format).await;
        }
        d => d?,
    };
    let what = || format!("recording {}", a.session_id);
    // Exports stream (memory: one chunk, however long the session); what
    // came before a damaged chunk is written, then the error.
    let out = || std::io::BufWriter::new(std::io::stdout().lock());
    match a.format {
        PlayFormat::Asciicast => {
            let mut w = AsciicastWriter::new(out());
            let read = read_download(&mut download, |i| w.item(&i)).await;
            written(w.finish())?;
            read.with_context(what)?;
        }
        PlayFormat::Text => {
            let mut w = TextWriter::new(out());
            let read = read_download(&mut download, |i| w.item(&i)).await;
            written(w.finish())?;
            read.with_context(what)?;
        }
        PlayFormat::Terminal => {
            // Kept whole: playback seeks back and forth.
            let mut bytes = Vec::new();
            while let Some(piece) = download.next().await? {
                if bytes.len() + piece.len() > MAX_FETCH {
                    bail!(
                        "{} is larger than {} MiB; export it with --format text or asciicast instead",
                        what(),
                        MAX_FETCH >> 20
                    );
                }
                bytes.extend_from_slice(&piece);
            }
            let rec = decode(&bytes).with_context(what)?;
            replay(&rec, a.speed, a.skip_idle).await?;
            if rec.truncated {
                eprintln!(
                    "\r\nwarden: the recording ends here: the session was cut short (node crash)."
                );
            }
        }
    }
    Ok(())
}

/// Reads a recording as it downloads, handing `sink` its header and events.
async fn read_download(
    download: &mut warden_client::http::Download,
    sink: impl FnMut(warden_recording::Item<'_>),
) -> anyhow::Result<warden_recording::Summary> {
    let mut reader = warden_recording::Reader::new(sink);
    while let Some(piece) = download.next().await? {
        reader.push(&piece)?;
    }
    Ok(reader.finish()?)
}

/// Keys understood during playback.
enum Key {
    Pause,
    Forward,
    Back,
    Quit,
}

/// The terminal in raw mode while alive (stdin only if it is a terminal).
struct Raw(Option<libc::termios>);

impl Raw {
    fn enter() -> Raw {
        // SAFETY: termios calls on fd 0 with a zeroed, then filled, struct.
        unsafe {
            if libc::isatty(0) != 1 {
                return Raw(None);
            }
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return Raw(None);
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            t.c_oflag |= libc::OPOST; // keep \n -> \r\n for our own messages
            libc::tcsetattr(0, libc::TCSANOW, &t);
            Raw(Some(saved))
        }
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            // SAFETY: restores the attributes read in `enter`.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, t);
            }
        }
    }
}

fn keys() -> mpsc::UnboundedReceiver<Key> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin();
        let mut esc = 0u8;
        let mut b = [0u8; 1];
        while stdin.read(&mut b).is_ok_and(|n| n == 1) {
            let key = match (esc, b[0]) {
                (2, b'C') => Some(Key::Forward),
                (2, b'D') => Some(Key::Back),
                (_, b' ') => Some(Key::Pause),
                (_, b'q') | (_, 3) => Some(Key::Quit),
                _ => None,
            };
            esc = match (esc, b[0]) {
                (_, 0x1b) => 1,
                (1, b'[') => 2,
                _ => 0,
            };
            if let Some(k) = key {
                if tx.send(k).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// Plays output events with their timing: space pauses, right/left arrows
/// seek 5 s, q quits.
async fn replay(rec: &Decoded, speed: f64, skip_idle: bool) -> anyhow::Result<()> {
    let interactive = Raw::enter();
    let mut keys = if interactive.0.is_some() {
        keys()
    } else {
        mpsc::unbounded_channel().1
    };
    // Once stdin is closed (or was never a terminal) there are no keys to
    // wait for; polling the closed channel would spin instead of sleeping.
    let mut keys_open = interactive.0.is_some();
    let events: Vec<_> = rec
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Output)
        .collect();
    let mut out = std::io::stdout();
    let (mut i, mut pos, mut paused) = (0usize, 0.0f64, false);
    while i < events.len() {
        let e = events[i];
        let mut gap = (e.time - pos).max(0.0);
        if skip_idle {
            gap = gap.min(1.0);
        }
        let wait = Duration::from_secs_f64(gap / speed);
        let key = if paused && keys_open {
            keys.recv().await
        } else if paused {
            None
        } else {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {
                    out.write_all(e.data.as_bytes())?;
                    out.flush()?;
                    pos = e.time;
                    i += 1;
                    continue;
                }
                k = keys.recv(), if keys_open => k,
            }
        };
        match key {
            Some(Key::Pause) => paused = !paused,
            Some(Key::Forward) => {
                let target = pos + SEEK;
                while i < events.len() && events[i].time <= target {
                    out.write_all(events[i].data.as_bytes())?;
                    i += 1;
                }
                out.flush()?;
                pos = target;
            }
            Some(Key::Back) => {
                let target = (pos - SEEK).max(0.0);
                // Redraw from the start up to the target at once.
                out.write_all(b"\x1bc")?;
                i = 0;
                while i < events.len() && events[i].time <= target {
                    out.write_all(events[i].data.as_bytes())?;
                    i += 1;
                }
                out.flush()?;
                pos = target;
            }
            Some(Key::Quit) => break,
            None => {
                keys_open = false;
                paused = false;
            }
        }
    }
    drop(interactive);
    Ok(())
}

/// A database session, as its list of statements from the audit log.
async fn play_db(session_id: &str, format: PlayFormat) -> anyhow::Result<()> {
    let found: warden_types::api::AuditEvents = api()?
        .call(
            &endpoints::AUDIT_EVENTS,
            &warden_types::api::AuditQuery {
                session_id: Some(session_id.to_string()),
                limit: Some(10_000),
                ..Default::default()
            },
        )
        .await?;
    let mut events = found.events;
    events.retain(|e| e.event_type.starts_with("db."));
    events.sort_by_key(|e| e.index);
    let Some(first) = events.first() else {
        bail!("no recording or database session {session_id}; 'warden recordings ls' lists recordings");
    };
    let field = |e: &warden_types::audit::AuditEvent, k: &str| {
        e.fields
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    if format == PlayFormat::Asciicast {
        bail!("database session {session_id} has no terminal output; use --format text");
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Database session {session_id}: {} on {} as {} (database {}), {}",
        first.user,
        field(first, "database"),
        field(first, "db_user"),
        field(first, "db_name"),
        output::time(first.time.unix_timestamp()),
    )?;
    let start = first.time;
    for e in &events {
        let at = (e.time - start).as_seconds_f64();
        let line = match e.event_type.as_str() {
            "db.query" => {
                let params = e
                    .fields
                    .get("params")
                    .and_then(|p| p.as_array())
                    .map(|p| {
                        let list: Vec<String> = p
                            .iter()
                            .map(|v| v.as_str().unwrap_or("").to_string())
                            .collect();
                        format!("  -- params: {}", list.join(", "))
                    })
                    .unwrap_or_default();
                format!("{}{params}", field(e, "query"))
            }
            other => format!("-- {other}: {}", e.message),
        };
        writeln!(out, "{at:>9.3}s  {line}")?;
    }
    Ok(())
}
