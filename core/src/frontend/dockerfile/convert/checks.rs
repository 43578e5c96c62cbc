//! Values BuildKit checks while converting: EXPOSE port specs (docker/go-connections'
//! `nat.ParsePortSpecs`: `80`, `80/udp`, ranges `8000-8002`, `ip:host:container`) and STOPSIGNAL
//! names or numbers (moby/sys `signal.ParseSignal`, Linux signals).

/// The exposed ports of `specs` as `PORT/PROTO` keys (a range gives one key per port).
pub(super) fn parse_port_specs(specs: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for raw in specs {
        // `ip:hostPort:containerPort[/proto]`: only the container port is exposed.
        let (port_part, proto) = match raw.rsplit_once('/') {
            Some((p, proto)) => (p, proto.to_lowercase()),
            None => (raw.as_str(), "tcp".to_owned()),
        };
        let container = port_part.rsplit(':').next().unwrap_or_default();
        if container.is_empty() {
            return Err(format!("no port specified: {raw}<empty>"));
        }
        let (start, end) = parse_port_range(container).ok_or_else(|| format!("invalid containerPort: {container}"))?;
        if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
            return Err(format!("invalid proto: {proto}"));
        }
        for p in start..=end {
            out.push(format!("{p}/{proto}"));
        }
    }
    Ok(out)
}

fn parse_port_range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let (a, b) = (a.parse::<u16>().ok()?, b.parse::<u16>().ok()?);
    (b >= a).then_some((a, b))
}

/// Linux signal names without `SIG` (moby/sys `signal.SignalMap`).
const SIGNALS: &[&str] = &[
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL", "PIPE", "POLL",
    "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1",
    "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ", "RTMIN", "RTMIN+1", "RTMIN+2", "RTMIN+3", "RTMIN+4", "RTMIN+5",
    "RTMIN+6", "RTMIN+7", "RTMIN+8", "RTMIN+9", "RTMIN+10", "RTMIN+11", "RTMIN+12", "RTMIN+13", "RTMIN+14", "RTMIN+15",
    "RTMAX-14", "RTMAX-13", "RTMAX-12", "RTMAX-11", "RTMAX-10", "RTMAX-9", "RTMAX-8", "RTMAX-7", "RTMAX-6", "RTMAX-5",
    "RTMAX-4", "RTMAX-3", "RTMAX-2", "RTMAX-1", "RTMAX",
];

/// Checks a STOPSIGNAL value as `signal.ParseSignal` does (a non-zero number, or a known name
/// with or without `SIG`, in upper case).
pub(super) fn check_signal(s: &str) -> Result<(), String> {
    if let Ok(n) = s.parse::<i64>() {
        return if n == 0 { Err(format!("Invalid signal: {s}")) } else { Ok(()) };
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    if SIGNALS.contains(&name) {
        Ok(())
    } else {
        Err(format!("Invalid signal: {s}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_signals() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_port_specs(&v(&["80", "53/UDP", "8000-8001", "127.0.0.1:90:91/tcp"])).unwrap(),
            ["80/tcp", "53/udp", "8000/tcp", "8001/tcp", "91/tcp"]
        );
        assert_eq!(parse_port_specs(&v(&["abc"])).unwrap_err(), "invalid containerPort: abc");
        assert!(check_signal("SIGKILL").is_ok() && check_signal("9").is_ok() && check_signal("TERM").is_ok());
        assert_eq!(check_signal("sigkill").unwrap_err(), "Invalid signal: sigkill");
    }
}
