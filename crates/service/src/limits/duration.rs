//! Go's `time.Duration` text (`547ms`, `1.5s`, `2m52.8s`, `1h30m0s`): the format of Groq's
//! `x-ratelimit-reset-*` headers and of the wait in its 429 messages.

/// `secs` as Go prints a duration; 0 or less is `0s`.
pub fn go_duration(secs: f64) -> String {
    if !secs.is_finite() || secs <= 0.0 {
        return "0s".into();
    }
    let ns = (secs * 1e9).round() as u128;
    const US: u128 = 1_000;
    const MS: u128 = 1_000_000;
    const S: u128 = 1_000_000_000;
    match ns {
        0 => "0s".into(),
        n if n < US => format!("{n}ns"),
        n if n < MS => format!("{}µs", decimal(n, US)),
        n if n < S => format!("{}ms", decimal(n, MS)),
        n => {
            let (h, m, s) = (n / (3600 * S), n / (60 * S) % 60, n % (60 * S));
            let mut out = String::new();
            if h > 0 {
                out.push_str(&format!("{h}h"));
            }
            if h > 0 || m > 0 {
                out.push_str(&format!("{m}m"));
            }
            out.push_str(&decimal(s, S));
            out.push('s');
            out
        }
    }
}

/// `value / unit` in decimal, without trailing zeros.
fn decimal(value: u128, unit: u128) -> String {
    let (int, frac) = (value / unit, value % unit);
    if frac == 0 {
        return int.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{int}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::go_duration;

    #[test]
    fn durations_print_as_go_prints_them() {
        for (secs, text) in [
            (0.0, "0s"),
            (-3.0, "0s"),
            (0.547, "547ms"),
            (1.5, "1.5s"),
            (7.66, "7.66s"),
            (172.8, "2m52.8s"),
            (179.56, "2m59.56s"),
            (5400.0, "1h30m0s"),
            (16.24, "16.24s"),
            (60.0, "1m0s"),
            (0.0000015, "1.5µs"),
            (2e-9, "2ns"),
            (86400.0, "24h0m0s"),
        ] {
            assert_eq!(go_duration(secs), text, "{secs}");
        }
    }
}
