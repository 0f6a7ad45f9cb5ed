//! Time-based one-time passwords (RFC 6238, HMAC-SHA1, 6 digits, 30 s).

use subtle::ConstantTimeEq;

/// Seconds per TOTP step.
pub const STEP: u64 = 30;
/// Minimum secret length in bytes (RFC 4226 recommends 160 bits).
pub const MIN_SECRET: usize = 20;

/// A new random secret, base32 without padding.
pub fn generate_secret() -> String {
    data_encoding::BASE32_NOPAD.encode(&crate::random_bytes::<20>())
}

/// Decodes a base32 secret (case, spaces and padding forgiven).
pub fn decode_secret(secret: &str) -> Option<Vec<u8>> {
    let clean: String = secret
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '=' && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    data_encoding::BASE32_NOPAD.decode(clean.as_bytes()).ok()
}

/// The code for `secret` at unix time `now`.
pub fn code_at(secret: &[u8], now: u64) -> String {
    let counter = now / STEP;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let mac = ring::hmac::sign(&key, &counter.to_be_bytes());
    let mac = mac.as_ref();
    let offset = (mac[mac.len() - 1] & 0x0f) as usize;
    let bin = u32::from_be_bytes([
        mac[offset],
        mac[offset + 1],
        mac[offset + 2],
        mac[offset + 3],
    ]) & 0x7fff_ffff;
    format!("{:06}", bin % 1_000_000)
}

/// Checks `code` against the previous, current and next step (clock skew).
/// Returns the matching step so callers can refuse its reuse.
pub fn verify(secret: &[u8], code: &str, now: u64) -> Option<u64> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut found = None;
    for step in [now / STEP - 1, now / STEP, now / STEP + 1] {
        let ok: bool = code_at(secret, step * STEP)
            .as_bytes()
            .ct_eq(code.as_bytes())
            .into();
        if ok && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// An `otpauth://` URI for authenticator apps.
pub fn uri(secret_b32: &str, account: &str, issuer: &str) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits=6&period={STEP}",
        enc(issuer),
        enc(account),
        secret_b32,
        enc(issuer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6238 appendix B, SHA1 key, last six digits.
    #[test]
    fn rfc6238_vectors() {
        let key = b"12345678901234567890";
        for (t, want) in [
            (59, "287082"),
            (1111111109, "081804"),
            (1111111111, "050471"),
            (1234567890, "005924"),
            (2000000000, "279037"),
            (20000000000, "353130"),
        ] {
            assert_eq!(code_at(key, t), want, "t={t}");
        }
    }

    #[test]
    fn verify_window_and_format() {
        let key = b"12345678901234567890";
        assert!(verify(key, "005924", 1234567890).is_some());
        assert!(verify(key, "005924", 1234567890 + 30).is_some());
        assert!(verify(key, "005924", 1234567890 + 90).is_none());
        assert!(verify(key, "5924", 1234567890).is_none());
        assert!(verify(key, "00592a", 1234567890).is_none());
        let s = generate_secret();
        assert_eq!(decode_secret(&s).unwrap().len(), 20);
        assert_eq!(decode_secret(&s.to_lowercase()).unwrap().len(), 20);
        assert!(
            uri(&s, "alice", "my cluster").starts_with("otpauth://totp/my%20cluster:alice?secret=")
        );
    }
}
