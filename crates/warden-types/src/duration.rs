//! Durations written the way people write them: `30s`, `8h`, `1h30m`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// A duration that (de)serializes as a human string such as `8h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn from_secs(secs: u64) -> Self {
        HumanDuration(Duration::from_secs(secs))
    }

    /// Unix seconds this long before `now` (`--since 7d`); a duration
    /// beyond the representable range means "since the beginning".
    pub fn before(self, now: i64) -> i64 {
        now.saturating_sub(i64::try_from(self.0.as_secs()).unwrap_or(i64::MAX))
    }

    /// Unix seconds this long after `now` (a lockout's or login's end); a
    /// configured duration beyond the representable range means "never".
    pub fn after(self, now: i64) -> i64 {
        now.saturating_add(i64::try_from(self.0.as_secs()).unwrap_or(i64::MAX))
    }
}

impl std::str::FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|e| format!("invalid duration {s:?}: {e} (examples: 30s, 15m, 8h, 1h30m)"))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How long ago / from now, for humans: `2h 3m ago`, `in 7h 59m`.
pub fn relative(from_now_secs: i64) -> String {
    let abs = from_now_secs.unsigned_abs();
    let rounded = if abs >= 3600 { abs / 60 * 60 } else { abs };
    let text = humantime::format_duration(Duration::from_secs(rounded)).to_string();
    if from_now_secs >= 0 {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn parses_and_prints() {
        let d: HumanDuration = "1h30m".parse().unwrap();
        assert_eq!(d.0, Duration::from_secs(5400));
        assert_eq!(d.to_string(), "1h 30m");
        assert!("forever".parse::<HumanDuration>().is_err());
        assert_eq!(relative(-7200), "2h ago");
        assert_eq!(relative(90), "in 1m 30s");
    }

    #[test]
    fn huge_durations_saturate() {
        let d: HumanDuration = "500000000000years".parse().unwrap();
        assert_eq!(d.after(1_000), i64::MAX);
        assert_eq!(d.before(1_000), 1_000 - i64::MAX);
        assert_eq!(d.before(-1_000), i64::MIN);
        assert_eq!(HumanDuration::from_secs(60).after(1_000), 1_060);
        assert_eq!(HumanDuration::from_secs(60).before(1_000), 940);
    }
}
