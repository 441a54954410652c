//! Durations as ringkv's tools take them on the command line: `500ms`,
//! `2s`, `1.5m`; a bare number is milliseconds.

use std::time::Duration;

/// Parses `500ms`, `2s`, `1.5m` or a bare number of milliseconds. Zero
/// and negative durations are rejected.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(ringkv_client::parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
/// assert!(ringkv_client::parse_duration("soon").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "ms"),
    };
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration like 500ms or 2s"))?;
    let ms = match unit {
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        other => return Err(format!("unknown unit {other:?} in {s:?}; use ms, s or m")),
    };
    if ms <= 0.0 {
        return Err(format!("{s:?}: a duration must be positive"));
    }
    Ok(Duration::from_micros((ms * 1000.0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_errors() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0s").unwrap_err().contains("positive"));
        assert!(parse_duration("3h").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("fast").unwrap_err().contains("not a duration"));
    }
}
