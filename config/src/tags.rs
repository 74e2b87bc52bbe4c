//! The limits of a node's tags, defined once: the builder checks a card's tags against them,
//! the node checks its `node.toml` at start and every `tags set`, and receivers check every
//! `State` message. A node must never carry a tag set that the others would refuse, or it
//! silently disappears from everything rendered from the membership (the `lb` backend).
//!
//! Tags named `*-port` hold port numbers ([`valid_port`]): templates put them after `ip:`.
//! A member whose tags break these rules is left out of rendered files, not rendered wrong.
//!
//! Pure: strings in, verdict out.

use std::collections::BTreeMap;

/// Most tags one node may carry.
pub const MAX_TAGS: usize = 64;

/// Longest tag key, tag value or node name, in bytes.
pub const MAX_STR: usize = 256;

/// Why a tag set is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    /// More than [`MAX_TAGS`] tags.
    #[error("{count} tags: a node carries at most {MAX_TAGS}")]
    TooMany {
        /// How many there were.
        count: usize,
    },
    /// A key that is empty, holds `=`, whitespace or a control character, or is too long.
    #[error(
        "{key:?} is not a tag name: 1 to {MAX_STR} bytes, no '=', no whitespace or control characters"
    )]
    BadKey {
        /// The key, as given.
        key: String,
    },
    /// A `*-port` tag whose value is not a port number.
    #[error("tag {key:?} must be a port number (1 to 65535), not {value:?}")]
    NotAPort {
        /// Its key.
        key: String,
        /// Its value (at most 64 characters of it).
        value: String,
    },
    /// A value over [`MAX_STR`] bytes.
    #[error("the value of tag {key:?} is {len} bytes: at most {MAX_STR}")]
    ValueTooLong {
        /// Its key.
        key: String,
        /// Its length in bytes.
        len: usize,
    },
}

/// Whether `key` may name a tag.
pub fn valid_tag_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_STR
        && !key.contains('=')
        && !key.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Whether `key` names a port (`http-port`, `pg-port`, ...): its value must be a port number,
/// because templates put it after `ip:` in config files.
pub fn is_port_tag(key: &str) -> bool {
    key.ends_with("-port")
}

/// A port number as a `*-port` tag holds it: decimal, 1 to 65535, no sign or padding.
pub fn valid_port(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 5
        && !value.starts_with('0')
        && value.bytes().all(|b| b.is_ascii_digit())
        && value.parse::<u32>().is_ok_and(|p| p <= 65535)
}

/// Checks one tag: its key, its length, and `*-port` values.
pub fn check_tag(key: &str, value: &str) -> Result<(), TagError> {
    if !valid_tag_key(key) {
        // Never echo an unbounded key back into an error (and a log line).
        let key: String = key.chars().take(64).collect();
        return Err(TagError::BadKey { key });
    }
    if value.len() > MAX_STR {
        return Err(TagError::ValueTooLong {
            key: key.to_string(),
            len: value.len(),
        });
    }
    if is_port_tag(key) && !valid_port(value) {
        return Err(TagError::NotAPort {
            key: key.to_string(),
            value: value.chars().take(64).collect(),
        });
    }
    Ok(())
}

/// Checks a whole tag set: every tag, and their number.
pub fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), TagError> {
    if tags.len() > MAX_TAGS {
        return Err(TagError::TooMany { count: tags.len() });
    }
    tags.iter().try_for_each(|(k, v)| check_tag(k, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: usize) -> BTreeMap<String, String> {
        (0..n).map(|i| (format!("k{i}"), "v".to_string())).collect()
    }

    #[test]
    fn limits_are_inclusive() {
        assert_eq!(check_tags(&set(MAX_TAGS)), Ok(()));
        assert_eq!(
            check_tags(&set(MAX_TAGS + 1)),
            Err(TagError::TooMany {
                count: MAX_TAGS + 1
            })
        );
        assert_eq!(
            check_tag(&"k".repeat(MAX_STR), &"v".repeat(MAX_STR)),
            Ok(())
        );
        assert!(matches!(
            check_tag(&"k".repeat(MAX_STR + 1), "v"),
            Err(TagError::BadKey { .. })
        ));
        assert_eq!(
            check_tag("role", &"v".repeat(MAX_STR + 1)),
            Err(TagError::ValueTooLong {
                key: "role".into(),
                len: MAX_STR + 1
            })
        );
    }

    #[test]
    fn port_tags_hold_port_numbers() {
        for ok in ["1", "80", "8080", "65535"] {
            assert_eq!(check_tag("http-port", ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "0",
            "080",
            "65536",
            "abc",
            "80 check",
            "80#",
            "+80",
            "99999999999",
        ] {
            assert!(
                matches!(check_tag("http-port", bad), Err(TagError::NotAPort { .. })),
                "{bad}"
            );
        }
        // Only *-port keys are numbers.
        assert_eq!(check_tag("port-name", "abc"), Ok(()));
    }

    #[test]
    fn keys_that_break_lines_or_env_are_refused() {
        for bad in ["", "a=b", "a b", "a\tb", "a\nb", "\u{7f}"] {
            assert!(!valid_tag_key(bad), "{bad:?}");
        }
        for ok in ["role", "http-port", "x.y", "ünï"] {
            assert!(valid_tag_key(ok), "{ok:?}");
        }
        // An over-long key is cut in the error, not echoed whole.
        let e = check_tag(&"k".repeat(10_000), "").unwrap_err().to_string();
        assert!(e.len() < 300, "{e}");
    }
}
