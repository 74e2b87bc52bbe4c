//! Checks of names that end up in system files (hostname, user name).

/// A valid hostname: one RFC 1123 label, 1 to 63 characters of `a-z`, `0-9` and `-`, not
/// starting or ending with `-`. Upper case is refused rather than folded, so what the user
/// typed is what the network sees.
pub fn valid_hostname(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// A valid user name, as Debian's `adduser` accepts by default: starts with a lower-case letter
/// or `_`, then up to 31 of `a-z`, `0-9`, `_` and `-`. `root` is refused: piforge never unlocks it.
pub fn valid_username(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
        && s != "root"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        for ok in ["pi", "pi-01", "a", "node-3f9a2c", &"a".repeat(63)] {
            assert!(valid_hostname(ok), "{ok}");
        }
        for bad in [
            "",
            "-pi",
            "pi-",
            "Pi",
            "pi.local",
            "pi_1",
            &"a".repeat(64),
            "pi 1",
        ] {
            assert!(!valid_hostname(bad), "{bad}");
        }
    }

    #[test]
    fn usernames() {
        for ok in ["pi", "_svc", "alice-2", "a_b"] {
            assert!(valid_username(ok), "{ok}");
        }
        for bad in [
            "",
            "root",
            "1pi",
            "Pi",
            "a b",
            "pi:x",
            &"a".repeat(33),
            "-pi",
        ] {
            assert!(!valid_username(bad), "{bad}");
        }
    }
}
