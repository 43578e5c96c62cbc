//! Value syntaxes BuildKit parses with Go's standard library or go-units, reproduced so that
//! the same strings are accepted and rejected with the same messages: `time.ParseDuration`
//! (HEALTHCHECK intervals), `units.RAMInBytes` (tmpfs `size=`), `strconv.ParseBool`,
//! `strconv.ParseUint` and `strconv.ParseInt` (mount modes and ids, retries).

use super::text::go_quote;

/// Go's `time.ParseDuration`: a signed sequence of decimal numbers with units (`1h30m`,
/// `1.5s`, `-2ms`; units ns, us, µs, ms, s, m, h), in nanoseconds.
pub fn parse_go_duration(s: &str) -> Result<i64, String> {
    const LIMIT: u64 = 1 << 63;
    let orig = s;
    let invalid = || format!("time: invalid duration {}", go_quote(orig));
    let mut s = s.as_bytes();
    let mut neg = false;
    if let Some(&c) = s.first() {
        if c == b'-' || c == b'+' {
            neg = c == b'-';
            s = &s[1..];
        }
    }
    if s == b"0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut d: u64 = 0;
    while !s.is_empty() {
        if !(s[0] == b'.' || s[0].is_ascii_digit()) {
            return Err(invalid());
        }
        // The integer part.
        let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
        let mut v: u64 = 0;
        for &c in &s[..digits] {
            if v > LIMIT / 10 {
                return Err(invalid());
            }
            v = v * 10 + u64::from(c - b'0');
            if v > LIMIT {
                return Err(invalid());
            }
        }
        let pre = digits > 0;
        s = &s[digits..];
        // The fraction: digits past what fits are ignored.
        let (mut f, mut scale, mut post) = (0u64, 1f64, false);
        if s.first() == Some(&b'.') {
            s = &s[1..];
            let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
            let mut overflow = false;
            for &c in &s[..digits] {
                if overflow {
                    continue;
                }
                if f > (LIMIT - 1) / 10 {
                    overflow = true;
                    continue;
                }
                let y = f * 10 + u64::from(c - b'0');
                if y > LIMIT {
                    overflow = true;
                    continue;
                }
                f = y;
                scale *= 10.0;
            }
            post = digits > 0;
            s = &s[digits..];
        }
        if !pre && !post {
            return Err(invalid());
        }
        let unit_len = s.iter().position(|c| *c == b'.' || c.is_ascii_digit()).unwrap_or(s.len());
        if unit_len == 0 {
            return Err(format!("time: missing unit in duration {}", go_quote(orig)));
        }
        let unit_text = String::from_utf8_lossy(&s[..unit_len]).into_owned();
        s = &s[unit_len..];
        let unit: u64 = match unit_text.as_str() {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => {
                return Err(format!("time: unknown unit {} in duration {}", go_quote(&unit_text), go_quote(orig)));
            }
        };
        if v > LIMIT / unit {
            return Err(invalid());
        }
        v *= unit;
        if f > 0 {
            v += (f as f64 * (unit as f64 / scale)) as u64;
            if v > LIMIT {
                return Err(invalid());
            }
        }
        d += v;
        if d > LIMIT {
            return Err(invalid());
        }
    }
    if neg {
        return Ok((d as i64).wrapping_neg());
    }
    if d > LIMIT - 1 {
        return Err(invalid());
    }
    Ok(d as i64)
}

/// go-units' `RAMInBytes` (v0.5): a number with an optional binary unit (`64m`, `1.5 GiB`,
/// `100kb`), in bytes.
pub fn ram_in_bytes(s: &str) -> Result<i64, String> {
    let invalid = || format!("invalid size: '{s}'");
    let Some(sep) = s.rfind(|c: char| c.is_ascii_digit() || c == '.' || c == ' ') else { return Err(invalid()) };
    let (num, sfx) = if s.as_bytes()[sep] != b' ' { (&s[..=sep], &s[sep + 1..]) } else { (&s[..sep], &s[sep + 1..]) };
    let size: f64 =
        num.parse().map_err(|_| format!("strconv.ParseFloat: parsing {}: invalid syntax", go_quote(num)))?;
    if size < 0.0 {
        return Err(invalid());
    }
    if sfx.is_empty() {
        return Ok(size as i64);
    }
    let bad = || format!("invalid suffix: '{sfx}'");
    if sfx.len() > 3 {
        return Err(bad());
    }
    let sfx = sfx.to_lowercase();
    let b = sfx.as_bytes();
    if b[0] == b'b' {
        return if b.len() > 1 { Err(bad()) } else { Ok(size as i64) };
    }
    let mul: f64 = match b[0] {
        b'k' => 1024.0,
        b'm' => 1024.0 * 1024.0,
        b'g' => 1024.0 * 1024.0 * 1024.0,
        b't' => 1024f64.powi(4),
        b'p' => 1024f64.powi(5),
        _ => return Err(bad()),
    };
    if (b.len() == 2 && b[1] != b'b') || (b.len() == 3 && &b[1..] != b"ib") {
        return Err(bad());
    }
    Ok((size * mul) as i64)
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.ParseUint(s, radix, 32)`: digits only (no sign), within `u32`.
pub fn parse_go_u32(s: &str, radix: u32) -> Option<u32> {
    if s.is_empty() || !s.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(s, radix).ok()
}

/// Go's `strconv.ParseInt(s, 10, 32)` with its error text.
pub fn parse_go_i32(s: &str) -> Result<i32, String> {
    use std::num::IntErrorKind;
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    let why = if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        "invalid syntax"
    } else {
        match s.parse::<i32>() {
            Ok(v) => return Ok(v),
            Err(e) if matches!(e.kind(), IntErrorKind::PosOverflow | IntErrorKind::NegOverflow) => "value out of range",
            Err(_) => "invalid syntax",
        }
    };
    Err(format!("strconv.ParseInt: parsing {}: {why}", go_quote(s)))
}

/// A duration in nanoseconds as Go's `Duration.String` prints it (`1m30s`, `1.5s`, `250ms`).
pub fn format_go_duration(nanos: i64) -> String {
    let neg = nanos < 0;
    let u = nanos.unsigned_abs();
    let sign = if neg { "-" } else { "" };
    if u < 1_000_000_000 {
        // Sub-second: the largest of ns, µs, ms that keeps an integer part.
        let (unit, div) = match u {
            0 => return "0s".to_owned(),
            1..=999 => ("ns", 1),
            1_000..=999_999 => ("\u{b5}s", 1_000),
            _ => ("ms", 1_000_000),
        };
        return format!("{sign}{}{unit}", fraction(u, div));
    }
    let (h, rest) = (u / 3_600_000_000_000, u % 3_600_000_000_000);
    let (m, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let secs = fraction(rest, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{sign}{secs}s"),
        (0, m) => format!("{sign}{m}m{secs}s"),
        (h, m) => format!("{sign}{h}h{m}m{secs}s"),
    }
}

/// `v / div` with its decimal fraction, trailing zeros dropped.
fn fraction(v: u64, div: u64) -> String {
    let (int, frac) = (v / div, v % div);
    if frac == 0 {
        return int.to_string();
    }
    let width = div.to_string().len() - 1;
    let digits = format!("{frac:0width$}");
    format!("{int}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_like_go() {
        let ok: &[(&str, i64)] = &[
            ("0", 0),
            ("5s", 5_000_000_000),
            ("30s", 30_000_000_000),
            ("1478s", 1_478_000_000_000),
            ("-5s", -5_000_000_000),
            ("+5s", 5_000_000_000),
            ("-0", 0),
            ("5.0s", 5_000_000_000),
            ("5.6s", 5_600_000_000),
            ("5.s", 5_000_000_000),
            (".5s", 500_000_000),
            ("1.004s", 1_004_000_000),
            ("100.00100s", 100_001_000_000),
            ("10ns", 10),
            ("11us", 11_000),
            ("12µs", 12_000),
            ("12μs", 12_000),
            ("13ms", 13_000_000),
            ("14s", 14_000_000_000),
            ("15m", 900_000_000_000),
            ("16h", 57_600_000_000_000),
            ("3h30m", 12_600_000_000_000),
            ("10.5s4m", 250_500_000_000),
            ("-2m3.4s", -123_400_000_000),
            ("1h2m3s4ms5us6ns", 3_723_004_005_006),
            ("39h9m14.425s", 140_954_425_000_000),
            ("52763797000ns", 52_763_797_000),
            ("0.3333333333333333333h", 1_200_000_000_000),
            ("9007199254740993ns", 9_007_199_254_740_993),
            ("9223372036854775807ns", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
            ("0.100000000000000000000h", 360_000_000_000),
        ];
        for (s, want) in ok {
            assert_eq!(parse_go_duration(s), Ok(*want), "{s}");
        }
        for s in ["", "3", "-", "s", ".", "-.", ".s", "+.s", "9223372036854775808ns", "3000000h"] {
            assert!(parse_go_duration(s).is_err(), "{s}");
        }
        assert_eq!(parse_go_duration("1").unwrap_err(), "time: missing unit in duration \"1\"");
        assert_eq!(parse_go_duration("1x").unwrap_err(), "time: unknown unit \"x\" in duration \"1x\"");
        assert_eq!(parse_go_duration("x").unwrap_err(), "time: invalid duration \"x\"");
    }

    #[test]
    fn formats_durations_like_go() {
        assert_eq!(format_go_duration(0), "0s");
        assert_eq!(format_go_duration(1_000_000), "1ms");
        assert_eq!(format_go_duration(1_500_000_000), "1.5s");
        assert_eq!(format_go_duration(90_000_000_000), "1m30s");
        assert_eq!(format_go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(format_go_duration(1_500), "1.5\u{b5}s");
        assert_eq!(format_go_duration(-5), "-5ns");
    }

    #[test]
    fn sizes_like_go_units() {
        let ok: &[(&str, i64)] = &[
            ("32", 32),
            ("32b", 32),
            ("32B", 32),
            ("32k", 32 * 1024),
            ("32K", 32 * 1024),
            ("32kb", 32 * 1024),
            ("32Kb", 32 * 1024),
            ("32Mb", 32 * 1024 * 1024),
            ("32Gb", 32 * 1024 * 1024 * 1024),
            ("32Tb", 32 * 1024i64.pow(4)),
            ("32Pb", 32 * 1024i64.pow(5)),
            ("32 Mb", 32 * 1024 * 1024),
            ("32.3", 32),
            ("32.3 mb", (32.3 * 1024.0 * 1024.0) as i64),
            ("1KiB", 1024),
            ("0.3 MiB", (0.3 * 1024.0 * 1024.0) as i64),
        ];
        for (s, want) in ok {
            assert_eq!(ram_in_bytes(s), Ok(*want), "{s}");
        }
        for s in ["", "hello", "-32", " 32 ", "32m b", "32bm", "32kib b", "32iB", "32MiBytes", "32.0.0", "32 MB "] {
            assert!(ram_in_bytes(s).is_err(), "{s}");
        }
    }

    #[test]
    fn numbers_like_strconv() {
        assert_eq!(parse_go_u32("0755", 8), Some(0o755));
        assert_eq!(parse_go_u32("+7", 8), None);
        assert_eq!(parse_go_u32("8", 8), None);
        assert_eq!(parse_go_u32("4294967296", 10), None);
        assert_eq!(parse_go_i32("-3"), Ok(-3));
        assert_eq!(parse_go_i32("x").unwrap_err(), "strconv.ParseInt: parsing \"x\": invalid syntax");
        assert_eq!(
            parse_go_i32("99999999999").unwrap_err(),
            "strconv.ParseInt: parsing \"99999999999\": value out of range"
        );
        assert_eq!(parse_go_bool("True"), Some(true));
        assert_eq!(parse_go_bool("yes"), None);
    }
}
