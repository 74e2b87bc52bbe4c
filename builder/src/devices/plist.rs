//! A small reader for XML property lists, the format of `diskutil list -plist` and
//! `diskutil info -plist DISK` on macOS.
//!
//! Pure: text in, a [`Value`] tree out. It understands the plist 1.0 DTD elements (`dict`, `key`,
//! `array`, `string`, `integer`, `real`, `true`, `false`, `data`, `date`), the XML prolog,
//! DOCTYPE, comments and the five predefined entities plus numeric character references.
//! Deliberately not a general XML parser (no CDATA, no custom entities, attributes are ignored),
//! not a writer, and no binary plists (`diskutil -plist` writes XML). Nesting is capped at
//! [`MAX_DEPTH`] so hostile input cannot overflow the stack. A new crate (`plist`, with
//! quick-xml, time, indexmap and base64 behind it) would be more than this one macOS-only reader
//! needs.

use thiserror::Error;

/// The deepest nesting of `dict`/`array` accepted (diskutil output nests 4 levels).
pub const MAX_DEPTH: usize = 64;

/// A plist value. Dictionaries keep their keys in document order.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `<dict>`: key/value pairs in document order.
    Dict(Vec<(String, Value)>),
    /// `<array>`.
    Array(Vec<Value>),
    /// `<string>`, entities decoded.
    String(String),
    /// `<integer>`.
    Integer(i128),
    /// `<real>`.
    Real(f64),
    /// `<true/>` or `<false/>`.
    Bool(bool),
    /// `<data>`: the base64 text as written (whitespace removed), not decoded.
    Data(String),
    /// `<date>`: the ISO 8601 text as written.
    Date(String),
}

/// Why a plist could not be read; `offset` is the byte offset in the text.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("reading plist at byte {offset}: {what}")]
pub struct PlistError {
    /// Byte offset in the input where the problem was seen.
    pub offset: usize,
    /// What was wrong.
    pub what: String,
}

impl Value {
    /// The value of `key` when `self` is a dict.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(kv) => kv.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The text of a `<string>`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// A non-negative `<integer>`.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Integer(i) => u64::try_from(*i).ok(),
            _ => None,
        }
    }

    /// A `<true/>`/`<false/>`.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The items of an `<array>` (empty for anything else).
    pub fn items(&self) -> &[Value] {
        match self {
            Value::Array(a) => a,
            _ => &[],
        }
    }
}

/// Parses an XML plist document and returns the value inside `<plist>`.
pub fn parse(text: &str) -> Result<Value, PlistError> {
    let mut p = Parser { s: text, pos: 0 };
    let root = p.tag()?;
    let value = match (root.name, root.kind) {
        ("plist", Kind::Open) => {
            let open = p.tag()?;
            let v = p.value(open, 0)?;
            p.close("plist")?;
            v
        }
        // A bare value without the <plist> wrapper is accepted too.
        _ => p.value(root, 0)?,
    };
    p.skip_misc()?;
    if p.pos != p.s.len() {
        return Err(p.err("content after the end of the document"));
    }
    Ok(value)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Open,
    Close,
    Empty,
}

#[derive(Debug, Clone, Copy)]
struct Tag<'a> {
    name: &'a str,
    kind: Kind,
    at: usize,
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn err(&self, what: impl Into<String>) -> PlistError {
        PlistError {
            offset: self.pos,
            what: what.into(),
        }
    }

    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    /// Skips whitespace, comments, processing instructions and the DOCTYPE.
    fn skip_misc(&mut self) -> Result<(), PlistError> {
        loop {
            let r = self.rest();
            let trimmed = r.trim_start();
            self.pos += r.len() - trimmed.len();
            let (open, close) = if trimmed.starts_with("<!--") {
                ("<!--", "-->")
            } else if trimmed.starts_with("<?") {
                ("<?", "?>")
            } else if trimmed.starts_with("<!") {
                ("<!", ">")
            } else {
                return Ok(());
            };
            match trimmed[open.len()..].find(close) {
                Some(i) => self.pos += open.len() + i + close.len(),
                None => return Err(self.err(format!("unterminated {open}"))),
            }
        }
    }

    fn tag(&mut self) -> Result<Tag<'a>, PlistError> {
        self.skip_misc()?;
        let at = self.pos;
        let r = self.rest();
        if !r.starts_with('<') {
            return Err(self.err("expected a tag"));
        }
        let end = r.find('>').ok_or_else(|| self.err("unterminated tag"))?;
        let inner = &r[1..end];
        self.pos += end + 1;
        let (kind, inner) = if let Some(i) = inner.strip_prefix('/') {
            (Kind::Close, i)
        } else if let Some(i) = inner.strip_suffix('/') {
            (Kind::Empty, i)
        } else {
            (Kind::Open, inner)
        };
        let name = inner.split_ascii_whitespace().next().unwrap_or("");
        if name.is_empty() {
            return Err(PlistError {
                offset: at,
                what: "empty tag name".into(),
            });
        }
        Ok(Tag { name, kind, at })
    }

    fn close(&mut self, name: &str) -> Result<(), PlistError> {
        let t = self.tag()?;
        if t.kind == Kind::Close && t.name == name {
            Ok(())
        } else {
            Err(PlistError {
                offset: t.at,
                what: format!("expected </{name}>, found <{}>", t.name),
            })
        }
    }

    /// Reads character data up to the next `<`, decodes entities, then expects `</name>`.
    fn text(&mut self, name: &str) -> Result<String, PlistError> {
        let r = self.rest();
        let end = r
            .find('<')
            .ok_or_else(|| self.err(format!("unterminated <{name}>")))?;
        let raw = &r[..end];
        let at = self.pos;
        self.pos += end;
        let text = decode_entities(raw).map_err(|what| PlistError { offset: at, what })?;
        self.close(name)?;
        Ok(text)
    }

    fn value(&mut self, open: Tag<'a>, depth: usize) -> Result<Value, PlistError> {
        if depth > MAX_DEPTH {
            return Err(PlistError {
                offset: open.at,
                what: "nested too deeply".into(),
            });
        }
        let bad = |what: String| PlistError {
            offset: open.at,
            what,
        };
        match (open.name, open.kind) {
            (_, Kind::Close) => Err(bad(format!("unexpected </{}>", open.name))),
            ("dict", Kind::Empty) => Ok(Value::Dict(Vec::new())),
            ("array", Kind::Empty) => Ok(Value::Array(Vec::new())),
            ("string", Kind::Empty) => Ok(Value::String(String::new())),
            ("data", Kind::Empty) => Ok(Value::Data(String::new())),
            ("true", Kind::Empty) => Ok(Value::Bool(true)),
            ("false", Kind::Empty) => Ok(Value::Bool(false)),
            ("true" | "false", Kind::Open) => {
                self.close(open.name)?;
                Ok(Value::Bool(open.name == "true"))
            }
            ("dict", Kind::Open) => {
                let mut kv = Vec::new();
                loop {
                    let t = self.tag()?;
                    match (t.name, t.kind) {
                        ("dict", Kind::Close) => return Ok(Value::Dict(kv)),
                        ("key", Kind::Open) => {
                            let k = self.text("key")?;
                            let vt = self.tag()?;
                            kv.push((k, self.value(vt, depth + 1)?));
                        }
                        ("key", Kind::Empty) => {
                            let vt = self.tag()?;
                            kv.push((String::new(), self.value(vt, depth + 1)?));
                        }
                        _ => {
                            return Err(PlistError {
                                offset: t.at,
                                what: format!("expected <key> in <dict>, found <{}>", t.name),
                            });
                        }
                    }
                }
            }
            ("array", Kind::Open) => {
                let mut items = Vec::new();
                loop {
                    let t = self.tag()?;
                    if t.kind == Kind::Close && t.name == "array" {
                        return Ok(Value::Array(items));
                    }
                    items.push(self.value(t, depth + 1)?);
                }
            }
            ("string", Kind::Open) => Ok(Value::String(self.text("string")?)),
            ("date", Kind::Open) => Ok(Value::Date(self.text("date")?.trim().to_string())),
            ("data", Kind::Open) => {
                let t = self.text("data")?;
                Ok(Value::Data(t.split_ascii_whitespace().collect()))
            }
            ("integer", Kind::Open) => {
                let t = self.text("integer")?;
                let t = t.trim();
                let n = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                    i128::from_str_radix(h, 16)
                } else {
                    t.parse::<i128>()
                };
                n.map(Value::Integer)
                    .map_err(|_| bad(format!("bad integer {t:?}")))
            }
            ("real", Kind::Open) => {
                let t = self.text("real")?;
                let t = t.trim();
                t.parse::<f64>()
                    .map(Value::Real)
                    .map_err(|_| bad(format!("bad real {t:?}")))
            }
            (name, _) => Err(bad(format!("unknown element <{name}>"))),
        }
    }
}

/// Decodes `&amp; &lt; &gt; &quot; &apos; &#N; &#xH;`.
fn decode_entities(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        let end = rest.find(';').ok_or("unterminated entity")?;
        let name = &rest[..end];
        let c = match name {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(h) = name.strip_prefix("#x") {
                    u32::from_str_radix(h, 16).ok()
                } else if let Some(d) = name.strip_prefix('#') {
                    d.parse::<u32>().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
                    .ok_or_else(|| format!("unknown entity &{name};"))?
            }
        };
        out.push(c);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_diskutil_shaped_document() {
        let v = parse(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<!-- a comment -->
	<key>AllDisks</key>
	<array>
		<string>disk2</string>
		<string>disk2s1</string>
	</array>
	<key>Size</key>
	<integer>31914983424</integer>
	<key>Removable</key>
	<true/>
	<key>Internal</key>
	<false/>
	<key>Name</key>
	<string>A &amp; B &lt;card&gt; &#233;&#x41;</string>
	<key>Empty</key>
	<string/>
	<key>Ratio</key>
	<real>0.5</real>
	<key>Blob</key>
	<data>
	AAEC
	AwQ=
	</data>
	<key>Nothing</key>
	<dict/>
</dict>
</plist>
"#,
        )
        .expect("valid plist");
        assert_eq!(v.get("AllDisks").map(|a| a.items().len()), Some(2));
        assert_eq!(
            v.get("AllDisks").and_then(|a| a.items()[1].as_str()),
            Some("disk2s1")
        );
        assert_eq!(v.get("Size").and_then(Value::as_u64), Some(31_914_983_424));
        assert_eq!(v.get("Removable").and_then(Value::as_bool), Some(true));
        assert_eq!(v.get("Internal").and_then(Value::as_bool), Some(false));
        assert_eq!(
            v.get("Name").and_then(Value::as_str),
            Some("A & B <card> éA")
        );
        assert_eq!(v.get("Empty").and_then(Value::as_str), Some(""));
        assert_eq!(v.get("Ratio"), Some(&Value::Real(0.5)));
        assert_eq!(v.get("Blob"), Some(&Value::Data("AAECAwQ=".into())));
        assert_eq!(v.get("Nothing"), Some(&Value::Dict(vec![])));
        assert_eq!(v.get("Missing"), None);
    }

    #[test]
    fn rejects_broken_documents_with_an_offset() {
        for bad in [
            "",
            "<plist><dict><key>a</key></dict></plist>",
            "<plist><dict><string>x</string></dict></plist>",
            "<plist><integer>12x</integer></plist>",
            "<plist><string>a &bogus; b</string></plist>",
            "<plist><string>open",
            "<plist><array></plist>",
            "<plist><true/></plist> trailing",
            "<plist><widget/></plist>",
            "<!-- never closed",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        let e = parse("<plist><integer>nope</integer></plist>").expect_err("bad integer");
        assert_eq!(e.offset, 7, "{e}");
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let depth = 10_000;
        let doc = format!("{}{}", "<array>".repeat(depth), "</array>".repeat(depth));
        let e = parse(&doc).expect_err("too deep");
        assert!(e.what.contains("deeply"), "{e}");
        let ok = format!("{}{}", "<array>".repeat(10), "</array>".repeat(10));
        assert!(parse(&ok).is_ok());
    }
}
