//! Which new passwords are acceptable. Auth enforces it at signup and
//! password change; the CLI checks it first, so a user hears about a weak
//! password before typing it twice.

/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 12;
/// Longest password accepted (argon2 input is bounded).
pub const MAX_PASSWORD: usize = 1024;

/// Lowest zxcvbn score (0-4) a new password must reach: 3 is "safely
/// unguessable" (about 10^10 guesses), which common passwords, keyboard
/// walks and dictionary words with digits never reach.
const MIN_STRENGTH: zxcvbn::Score = zxcvbn::Score::Three;

/// Whether `password` may be used by `user`: long enough, not absurdly
/// long, and not guessable (common passwords, words, the user's own name).
/// The error says what is wrong and what to do.
pub fn password_strength(password: &str, user: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD || password.len() > MAX_PASSWORD {
        return Err(format!(
            "password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters long"
        ));
    }
    let estimate = zxcvbn::zxcvbn(password, &[user, "warden"]);
    if estimate.score() < MIN_STRENGTH {
        let hint = estimate
            .feedback()
            .and_then(|f| f.warning().map(|w| w.to_string()))
            .unwrap_or_else(|| "it is too easy to guess".into());
        return Err(format!(
            "password is too easy to guess ({hint}); use a longer passphrase of unrelated words"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_and_guessable_passwords_are_refused() {
        for weak in [
            "password1234",
            "123456789012",
            "qwertyuiopas",
            "alice-alice-alice",
            "Password123!",
            "iloveyou2024",
        ] {
            assert!(password_strength(weak, "alice").is_err(), "{weak}");
        }
        assert!(password_strength("short", "alice")
            .unwrap_err()
            .contains("12"));
        for strong in ["correct horse battery staple", "vK9#mQ2!pL7@xR4s"] {
            assert!(password_strength(strong, "alice").is_ok(), "{strong}");
        }
    }
}
