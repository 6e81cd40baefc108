//! Small value syntaxes: names, durations, memory sizes, http grants.

use std::time::Duration;

/// `[a-z0-9][a-z0-9-]*`
pub(crate) fn is_workflow_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_lowercase() || f.is_ascii_digit())
        && c.all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || x == '-')
}

/// `[a-z][a-z0-9_-]*` (step ids and plugin aliases)
pub(crate) fn is_step_id(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_lowercase())
        && c.all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || x == '_' || x == '-')
}

/// `[A-Za-z_][A-Za-z0-9_-]*`: names usable in expressions (inputs, vars, secrets).
pub(crate) fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == '-')
}

/// `[A-Za-z_][A-Za-z0-9_]*`: environment variable names.
pub(crate) fn is_env_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// A humantime duration (`30s`, `1m 30s`, `500ms`), not zero.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.chars().all(|c| c.is_ascii_digit()) && !t.is_empty() {
        return Err("the unit is missing".to_owned());
    }
    use humantime::DurationError as E;
    match humantime::parse_duration(t) {
        Ok(d) if d.is_zero() => Err("a duration of zero is not allowed".to_owned()),
        Ok(d) => Ok(d),
        Err(E::UnknownUnit { unit, .. }) => Err(format!(
            "unknown unit `{unit}` (units: ms, s, m, h, d, w, and their long names)"
        )),
        Err(E::NumberExpected(_)) => Err("expected a number before each unit".to_owned()),
        Err(E::InvalidCharacter(i)) => Err(format!(
            "unexpected character `{}`",
            t.get(i..).and_then(|r| r.chars().next()).unwrap_or('?')
        )),
        Err(E::NumberOverflow) => Err("the duration is too large".to_owned()),
        Err(E::Empty) => Err("the duration is empty".to_owned()),
    }
}

/// `64MiB`, `512 KiB`, `1GiB`, `4096B`: a whole number and a binary unit.
pub(crate) fn parse_memory(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    let (num, unit) = t.split_at(digits);
    let unit = unit.trim_start();
    if num.is_empty() {
        return Err("a size starts with a whole number".to_owned());
    }
    let mult: u64 = match unit {
        "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "" => return Err(format!("`{t}` has no unit")),
        "KB" | "kB" | "MB" | "GB" | "K" | "M" | "G" | "k" | "m" | "g" | "kb" | "mb" | "gb" => {
            return Err(format!("unit `{unit}` is not supported (units are binary)"));
        }
        _ => return Err(format!("unknown unit `{unit}`")),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| "the number is too large".to_owned())?;
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| "the size is too large".to_owned())?;
    if bytes == 0 {
        return Err("a size of zero is not allowed".to_owned());
    }
    Ok(bytes)
}

/// Whether a checked http grant names this machine only (`127.0.0.1`, `::1`,
/// `localhost`, any port).
pub(crate) fn is_loopback_grant(g: &str) -> bool {
    let host = match g.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => g.rsplit_once(':').map_or(g, |(h, _)| h),
    };
    matches!(host, "127.0.0.1" | "::1" | "localhost")
}

/// Check an http grant: `host`, `host:port`, leading `*.` wildcard allowed;
/// IPv4 and bracketed IPv6 literals allowed. Returns it lower-cased.
pub(crate) fn parse_http_grant(s: &str) -> Result<String, String> {
    let lower = s.trim().to_ascii_lowercase();
    if lower.is_empty() {
        return Err("the host is empty".to_owned());
    }
    if lower.contains("://") {
        return Err("give a host (and optional port), not a URL".to_owned());
    }
    if lower.contains('/') {
        return Err("a grant names a host, not a path".to_owned());
    }
    let (host, port) = if let Some(rest) = lower.strip_prefix('[') {
        let Some(close) = rest.find(']') else {
            return Err("unclosed `[` in IPv6 address".to_owned());
        };
        let addr = &rest[..close];
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("`{addr}` is not an IPv6 address"));
        }
        let after = &rest[close + 1..];
        match after.strip_prefix(':') {
            Some(p) => (None, Some(p)),
            None if after.is_empty() => (None, None),
            None => return Err("unexpected text after `]`".to_owned()),
        }
    } else {
        match lower.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(lower.as_str()), None),
        }
    };
    if let Some(p) = port {
        match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(format!("`{p}` is not a port (1-65535)")),
            Ok(_) => {}
        }
    }
    if let Some(h) = host {
        let name = h.strip_prefix("*.").unwrap_or(h);
        if name.contains('*') {
            return Err("`*` is only allowed as a leading `*.`".to_owned());
        }
        if name.is_empty() {
            return Err("the host is empty".to_owned());
        }
        if name.len() > 253 {
            return Err("the host name is too long".to_owned());
        }
        for label in name.split('.') {
            if label.is_empty() {
                return Err("empty label in host name (`..` or a trailing `.`)".to_owned());
            }
            if label.len() > 63 {
                return Err(format!("label `{label}` is longer than 63 characters"));
            }
            if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(format!(
                    "`{label}` is not a valid host name label (letters, digits and `-`)"
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(format!("label `{label}` starts or ends with `-`"));
            }
        }
    }
    Ok(lower)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_workflow_name("quickstart"));
        assert!(is_workflow_name("0-dr"));
        assert!(!is_workflow_name("-x"));
        assert!(!is_workflow_name("Quick"));
        assert!(!is_workflow_name(""));
        assert!(is_step_id("create_vm-2"));
        assert!(!is_step_id("2create"));
        assert!(!is_step_id("Create"));
        assert!(is_ident("api_token"));
        assert!(!is_ident("api token"));
        assert!(is_env_name("DEMO_API_TOKEN"));
        assert!(!is_env_name("DEMO-TOKEN"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn memory() {
        assert_eq!(parse_memory("64MiB"), Ok(64 << 20));
        assert_eq!(parse_memory("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_memory("1GiB"), Ok(1 << 30));
        assert_eq!(parse_memory("4096B"), Ok(4096));
        assert!(parse_memory("64MB").is_err());
        assert!(parse_memory("64").is_err());
        assert!(parse_memory("MiB").is_err());
        assert!(parse_memory("0MiB").is_err());
        assert!(parse_memory("99999999999999GiB").is_err());
        assert!(parse_memory("1.5GiB").is_err());
    }

    #[test]
    fn loopback_grants() {
        for g in [
            "127.0.0.1",
            "127.0.0.1:8080",
            "localhost",
            "[::1]:9000",
            "[::1]",
        ] {
            assert!(is_loopback_grant(g), "{g}");
        }
        for g in [
            "127.0.0.2",
            "example.com",
            "*.internal",
            "localhost.evil.com:80",
        ] {
            assert!(!is_loopback_grant(g), "{g}");
        }
    }

    #[test]
    fn http_grants() {
        for ok in [
            "127.0.0.1:8080",
            "*.example.com",
            "api.example.com",
            "*.example.com:443",
            "[::1]:8080",
            "localhost",
            "API.Example.com",
        ] {
            assert!(parse_http_grant(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            parse_http_grant("API.Example.com").as_deref(),
            Ok("api.example.com")
        );
        for bad in [
            "https://example.com",
            "example.com/path",
            "*",
            "*example.com",
            "a.*.com",
            "host:0",
            "host:99999",
            "host:",
            "ex ample.com",
            "example..com",
            "[::1",
            "[nope]:80",
            "",
        ] {
            assert!(parse_http_grant(bad).is_err(), "{bad}");
        }
    }
}
