//! Byte sizes for the CLI: parsing `--keep-storage` values and printing human sizes.

/// Parses `512`, `512MB`, `1.5GB`, `10GiB`, `100B`; a plain number is MB, as in buildctl.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| {
        format!("invalid size {s:?}: expected a number with an optional unit (B, KB, MB, GB, KiB, MiB, GiB)")
    })?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "mb" | "m" => 1e6,
        "b" => 1.0,
        "kb" | "k" => 1e3,
        "gb" | "g" => 1e9,
        "tb" | "t" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!("invalid size unit {other:?} in {s:?}: expected B, KB, MB, GB, TB, KiB, MiB or GiB"))
        }
    };
    Ok((n * mult) as u64)
}

/// Parses `90s`, `30m`, `12h`, `7d`, `2w` (a plain number is seconds).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}: expected N[s|m|h|d|w], e.g. 7d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        other => return Err(format!("invalid duration unit {other:?} in {s:?}: expected s, m, h, d or w")),
    };
    Ok(std::time::Duration::from_secs(n * mult))
}

/// `1.5MB`-style rendering.
pub fn human(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{v:.2}{}", units[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10").unwrap(), 10_000_000);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("100B").unwrap(), 100);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5XB").unwrap_err().contains("XB"));
        assert_eq!(human(1500), "1.50kB");
        assert_eq!(parse_duration("7d").unwrap().as_secs(), 7 * 86400);
        assert!(parse_duration("3y").is_err());
    }
}
