//! Prompts that scripts can answer too.

use anyhow::{bail, Context};
use std::io::{BufRead, IsTerminal, Write};
use warden_types::Secret;

/// A secret from the first line of `file` (given with `flag`; it must be
/// 0600), else from the environment variable `env`; `missing` says what
/// to give when there is neither.
pub fn secret_from_file_or_env(
    file: Option<&std::path::Path>,
    flag: &str,
    env: &str,
    missing: &str,
) -> anyhow::Result<zeroize::Zeroizing<String>> {
    let text = match file {
        Some(path) => {
            warden_ca::keystore::check_private_mode(path)
                .map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))?;
            zeroize::Zeroizing::new(
                std::fs::read_to_string(path)
                    .with_context(|| format!("{flag}: cannot read {}", path.display()))?,
            )
        }
        None => {
            zeroize::Zeroizing::new(std::env::var(env).map_err(|_| anyhow::anyhow!("{missing}"))?)
        }
    };
    Ok(zeroize::Zeroizing::new(
        text.lines().next().unwrap_or_default().to_string(),
    ))
}

/// Reads one line from stdin (for `--password-stdin`).
pub fn line_from_stdin(what: &str) -> anyhow::Result<Secret<String>> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .with_context(|| format!("cannot read the {what} from stdin"))?;
    let line = line.trim_end_matches(['\r', '\n']).to_string();
    if line.is_empty() {
        bail!("no {what} on stdin");
    }
    Ok(Secret::new(line))
}

/// A secret token from `--token-file FILE` (`-`: the first line of
/// stdin), else the one given on the command line (which other users of
/// the machine can see in `ps`: the file form is preferred).
pub fn token_from(
    arg: Option<String>,
    file: Option<&std::path::Path>,
    what: &str,
) -> anyhow::Result<Option<String>> {
    let Some(file) = file else {
        return Ok(arg);
    };
    if arg.is_some() {
        bail!("give the {what} either on the command line or with --token-file, not both");
    }
    let text = if file == std::path::Path::new("-") {
        line_from_stdin(what)?.expose().clone()
    } else {
        std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the {what} from {}", file.display()))?
    };
    let token = text.trim().to_string();
    if token.is_empty() || token.contains(char::is_whitespace) {
        bail!(
            "{} does not hold a {what} (one line, no spaces)",
            file.display()
        );
    }
    Ok(Some(token))
}

fn require_tty(flag: &str) -> anyhow::Result<()> {
    if std::io::stdin().is_terminal() || std::path::Path::new("/dev/tty").exists() {
        Ok(())
    } else {
        bail!("no terminal to ask on; pass {flag}")
    }
}

/// Asks for a secret without echo.
pub fn secret(prompt: &str, flag: &str) -> anyhow::Result<Secret<String>> {
    require_tty(flag)?;
    let v = rpassword::prompt_password(prompt)
        .with_context(|| format!("cannot read from the terminal; pass {flag}"))?;
    Ok(Secret::new(v))
}

/// Asks a yes/no question on the terminal; no terminal means no.
pub fn confirm(question: &str) -> bool {
    if !std::io::stdin().is_terminal() {
        return false;
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim(), "y" | "Y" | "yes" | "Yes")
}

/// A QR code for the terminal (two rows per character).
pub fn qr(text: &str) -> Option<String> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    Some(
        code.render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}
