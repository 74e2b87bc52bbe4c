//! bmap v2.0 files (the format of `bmaptool`, Debian `bmap-tools`): an XML list of the 4 KiB
//! blocks of an image worth copying, each range with its sha256, and the sha256 of the file
//! itself computed with that field zeroed, exactly as `bmaptool` checks it.
//!
//! The used ranges come from [`crate::image::blockmap`] (the filesystems' allocation), not from
//! looking for zeros or holes. [`render`] is pure; [`write_bmap`] reads the image to checksum
//! the ranges. [`parse`] reads a published bmap (untrusted input: a small tag scanner for the
//! few elements bmap files have, not a general XML parser; it checks `BmapFileChecksum`).
//! It deliberately doesn't copy or flash anything.

use std::io::{self, Read, Seek, SeekFrom, Write};

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::image::blockmap::BlockMap;

/// The block size we write (bmaptool's default, and the ext4 block size of Pi images).
pub const BMAP_BLOCK_SIZE: u64 = 4096;

/// A mapped range of blocks, inclusive, with the sha256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmapRange {
    /// First block.
    pub first: u64,
    /// Last block (inclusive).
    pub last: u64,
    /// Lowercase hex sha256 of the bytes (the last block may be short at the image's end).
    pub sha256: String,
}

/// Why a bmap could not be written.
#[derive(Debug, Error)]
pub enum BmapError {
    /// Reading the image or writing the bmap failed.
    #[error("{what}")]
    Io {
        /// What was being done, e.g. `reading the image at byte 4096`.
        what: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// Why a bmap file could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BmapParseError {
    /// Not a bmap, or a version we don't read (we read 2.x: sha256 checksums).
    #[error("not a bmap version 2 file: {0}")]
    Format(String),
    /// A field is missing or malformed.
    #[error("bmap field {field}: {reason}")]
    Field {
        /// The element name, e.g. `ImageSize`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The file's own checksum does not match its contents (corrupt or edited).
    #[error("bmap file checksum mismatch: the file says {expected}, its contents hash to {actual}")]
    Checksum {
        /// `BmapFileChecksum`.
        expected: String,
        /// What the text hashes to with that field zeroed.
        actual: String,
    },
}

/// A parsed bmap file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bmap {
    /// Size of the image in bytes.
    pub image_size: u64,
    /// Block size in bytes.
    pub block_size: u64,
    /// The mapped ranges, in file order (checked: sorted, disjoint, inside the image).
    pub ranges: Vec<BmapRange>,
}

impl Bmap {
    /// Byte range `[start, end)` of a range, clipped to the image.
    pub fn byte_range(&self, r: &BmapRange) -> (u64, u64) {
        let start = r.first.saturating_mul(self.block_size);
        let end = r
            .last
            .saturating_add(1)
            .saturating_mul(self.block_size)
            .min(self.image_size);
        (start, end)
    }

    /// Bytes the ranges cover.
    pub fn mapped_bytes(&self) -> u64 {
        self.ranges
            .iter()
            .map(|r| {
                let (a, b) = self.byte_range(r);
                b - a
            })
            .sum()
    }
}

/// The text between `<name>` and `</name>` (first occurrence), trimmed.
fn element<'a>(xml: &'a str, name: &'static str) -> Result<&'a str, BmapParseError> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let missing = |reason: &str| BmapParseError::Field {
        field: name,
        reason: reason.to_owned(),
    };
    let start = xml.find(&open).ok_or_else(|| missing("missing"))? + open.len();
    let len = xml[start..]
        .find(&close)
        .ok_or_else(|| missing("not closed"))?;
    Ok(xml[start..start + len].trim())
}

fn number(xml: &str, name: &'static str) -> Result<u64, BmapParseError> {
    let v = element(xml, name)?;
    v.parse().map_err(|_| BmapParseError::Field {
        field: name,
        reason: format!("{v:?} is not a number"),
    })
}

/// Parses a bmap v2.x file, checking its `BmapFileChecksum` and that its ranges are sorted,
/// disjoint and inside the image (pure).
pub fn parse(xml: &str) -> Result<Bmap, BmapParseError> {
    let head_end = xml
        .find("<bmap ")
        .ok_or_else(|| BmapParseError::Format("no <bmap> element".into()))?;
    let tag_end = xml[head_end..]
        .find('>')
        .ok_or_else(|| BmapParseError::Format("<bmap> is not closed".into()))?;
    let tag = &xml[head_end..head_end + tag_end];
    let version = tag
        .split("version=\"")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .ok_or_else(|| BmapParseError::Format("<bmap> has no version".into()))?;
    if version.split('.').next() != Some("2") {
        return Err(BmapParseError::Format(format!(
            "version {version} (bmaptool 3.x writes 2.0; older 1.x files use sha1/md5)"
        )));
    }
    let image_size = number(xml, "ImageSize")?;
    let block_size = number(xml, "BlockSize")?;
    if block_size == 0 || block_size % 512 != 0 || block_size > 1 << 24 {
        return Err(BmapParseError::Field {
            field: "BlockSize",
            reason: format!("{block_size} is not a multiple of 512 up to 16 MiB"),
        });
    }
    let blocks = number(xml, "BlocksCount")?;
    if blocks != image_size.div_ceil(block_size) {
        return Err(BmapParseError::Field {
            field: "BlocksCount",
            reason: format!("{blocks} does not match ImageSize {image_size}"),
        });
    }
    let kind = element(xml, "ChecksumType")?;
    if kind != "sha256" {
        return Err(BmapParseError::Field {
            field: "ChecksumType",
            reason: format!("{kind:?}: only sha256 is read"),
        });
    }
    let expected = element(xml, "BmapFileChecksum")?;
    if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(BmapParseError::Field {
            field: "BmapFileChecksum",
            reason: "not a sha256".into(),
        });
    }
    // `expected` is a slice of `xml`: its offset is where the field's digits are.
    let at = expected.as_ptr() as usize - xml.as_ptr() as usize;
    let mut zeroed = String::with_capacity(xml.len());
    zeroed.push_str(&xml[..at]);
    zeroed.push_str(&"0".repeat(64));
    zeroed.push_str(&xml[at + 64..]);
    let actual = hex::encode(Sha256::digest(zeroed.as_bytes()));
    if !actual.eq_ignore_ascii_case(expected) {
        return Err(BmapParseError::Checksum {
            expected: expected.to_ascii_lowercase(),
            actual,
        });
    }
    let map = element(xml, "BlockMap")?;
    let mut ranges: Vec<BmapRange> = Vec::new();
    let bad = |reason: String| BmapParseError::Field {
        field: "Range",
        reason,
    };
    for item in map.split("<Range").skip(1) {
        let (attrs, rest) = item
            .split_once('>')
            .ok_or_else(|| bad("unclosed <Range>".into()))?;
        let body = rest
            .split_once("</Range>")
            .ok_or_else(|| bad("missing </Range>".into()))?
            .0
            .trim();
        let sha256 = attrs
            .split("chksum=\"")
            .nth(1)
            .and_then(|v| v.split('"').next())
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| bad(format!("{body}: no sha256 chksum attribute")))?
            .to_ascii_lowercase();
        let (a, b) = body.split_once('-').unwrap_or((body, body));
        let parse = |s: &str| {
            s.trim()
                .parse::<u64>()
                .map_err(|_| bad(format!("{body:?} is not a block or block range")))
        };
        let (first, last) = (parse(a)?, parse(b)?);
        if last < first || last >= blocks {
            return Err(bad(format!(
                "{first}-{last} is outside the image's {blocks} blocks"
            )));
        }
        if ranges.last().is_some_and(|p| first <= p.last) {
            return Err(bad(format!(
                "{first}-{last} overlaps or precedes the previous range"
            )));
        }
        ranges.push(BmapRange {
            first,
            last,
            sha256,
        });
    }
    Ok(Bmap {
        image_size,
        block_size,
        ranges,
    })
}

/// What [`write_bmap`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BmapSummary {
    /// Blocks in the image (the last one may be partial).
    pub blocks: u64,
    /// Blocks listed.
    pub mapped_blocks: u64,
    /// Ranges listed.
    pub ranges: u64,
}

/// Block ranges (inclusive) of `map`, with blocks of `block_size`, merged (pure).
pub fn block_ranges(map: &BlockMap, block_size: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for r in &map.ranges {
        let end = r.end.min(map.image_size);
        if end <= r.start {
            continue;
        }
        let (first, last) = (r.start / block_size, (end - 1) / block_size);
        match out.last_mut() {
            Some(prev) if first <= prev.1 + 1 => prev.1 = prev.1.max(last),
            _ => out.push((first, last)),
        }
    }
    out
}

/// The bmap XML for an image of `image_size` bytes, with `BmapFileChecksum` filled in (pure).
pub fn render(image_size: u64, block_size: u64, ranges: &[BmapRange]) -> String {
    const ZEROS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
    let blocks = image_size.div_ceil(block_size);
    let mapped: u64 = ranges.iter().map(|r| r.last - r.first + 1).sum();
    let percent = if blocks == 0 {
        0.0
    } else {
        mapped as f64 * 100.0 / blocks as f64
    };
    let mut x = String::new();
    x.push_str("<?xml version=\"1.0\" ?>\n");
    x.push_str("<!-- Block map written by piforge from the image's partition table and\n");
    x.push_str("     filesystem allocation (FAT, ext4 block bitmaps), for bmaptool copy. -->\n");
    x.push_str("<bmap version=\"2.0\">\n");
    x.push_str(&format!("    <!-- Image size in bytes: {image_size} -->\n"));
    x.push_str(&format!("    <ImageSize> {image_size} </ImageSize>\n\n"));
    x.push_str("    <!-- Size of a block in bytes -->\n");
    x.push_str(&format!("    <BlockSize> {block_size} </BlockSize>\n\n"));
    x.push_str("    <!-- Count of blocks in the image file -->\n");
    x.push_str(&format!("    <BlocksCount> {blocks} </BlocksCount>\n\n"));
    x.push_str(&format!(
        "    <!-- Count of mapped blocks: {percent:.1}% -->\n"
    ));
    x.push_str(&format!(
        "    <MappedBlocksCount> {mapped} </MappedBlocksCount>\n\n"
    ));
    x.push_str("    <!-- Type of checksum used in this file -->\n");
    x.push_str("    <ChecksumType> sha256 </ChecksumType>\n\n");
    x.push_str("    <!-- The checksum of this bmap file. When it is calculated, the value of\n");
    x.push_str("         the checksum has be zero (all ASCII \"0\" symbols).  -->\n");
    x.push_str("    <BmapFileChecksum> ");
    let checksum_at = x.len();
    x.push_str(ZEROS);
    x.push_str(" </BmapFileChecksum>\n\n");
    x.push_str("    <BlockMap>\n");
    for r in ranges {
        if r.first == r.last {
            x.push_str(&format!(
                "        <Range chksum=\"{}\"> {} </Range>\n",
                r.sha256, r.first
            ));
        } else {
            x.push_str(&format!(
                "        <Range chksum=\"{}\"> {}-{} </Range>\n",
                r.sha256, r.first, r.last
            ));
        }
    }
    x.push_str("    </BlockMap>\n");
    x.push_str("</bmap>\n");
    let sum = hex::encode(Sha256::digest(x.as_bytes()));
    x.replace_range(checksum_at..checksum_at + ZEROS.len(), &sum);
    x
}

/// Checksums the mapped ranges of `image` and writes the bmap to `out`.
pub fn write_bmap<R: Read + Seek, W: Write>(
    image: &mut R,
    map: &BlockMap,
    mut out: W,
) -> Result<BmapSummary, BmapError> {
    let mut ranges = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    for (first, last) in block_ranges(map, BMAP_BLOCK_SIZE) {
        let start = first * BMAP_BLOCK_SIZE;
        let end = ((last + 1) * BMAP_BLOCK_SIZE).min(map.image_size);
        let io = |source| BmapError::Io {
            what: format!("reading the image at byte {start}"),
            source,
        };
        image.seek(SeekFrom::Start(start)).map_err(io)?;
        let mut hasher = Sha256::new();
        let mut left = end - start;
        while left > 0 {
            let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            image.read_exact(&mut buf[..n]).map_err(io)?;
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
        ranges.push(BmapRange {
            first,
            last,
            sha256: hex::encode(hasher.finalize()),
        });
    }
    let xml = render(map.image_size, BMAP_BLOCK_SIZE, &ranges);
    out.write_all(xml.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|source| BmapError::Io {
            what: "writing the bmap".into(),
            source,
        })?;
    Ok(BmapSummary {
        blocks: map.image_size.div_ceil(BMAP_BLOCK_SIZE),
        mapped_blocks: ranges.iter().map(|r| r.last - r.first + 1).sum(),
        ranges: ranges.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::blockmap::ByteRange;

    #[test]
    fn ranges_round_out_to_blocks_and_merge() {
        let map = BlockMap {
            image_size: 10 * 4096 + 100,
            ranges: vec![
                ByteRange::at(0, 512),
                ByteRange::at(4096 + 10, 10),
                ByteRange::at(3 * 4096, 4096),
                ByteRange::at(10 * 4096, 100),
            ],
            partitions: vec![],
        };
        assert_eq!(block_ranges(&map, 4096), vec![(0, 1), (3, 3), (10, 10)]);
    }

    #[test]
    fn parse_reads_what_render_writes() {
        let ranges = vec![
            BmapRange {
                first: 0,
                last: 2,
                sha256: "ab".repeat(32),
            },
            BmapRange {
                first: 7,
                last: 7,
                sha256: "cd".repeat(32),
            },
        ];
        let xml = render(8 * 4096 - 100, 4096, &ranges);
        let b = parse(&xml).unwrap();
        assert_eq!(b.image_size, 8 * 4096 - 100);
        assert_eq!(b.block_size, 4096);
        assert_eq!(b.ranges, ranges);
        assert_eq!(b.byte_range(&b.ranges[1]), (7 * 4096, 8 * 4096 - 100));
        assert_eq!(b.mapped_bytes(), 3 * 4096 + 4096 - 100);
    }

    #[test]
    fn parse_refuses_edits_versions_and_bad_ranges() {
        let one = |first, last| BmapRange {
            first,
            last,
            sha256: "ab".repeat(32),
        };
        let xml = render(4 * 4096, 4096, &[one(0, 1)]);
        let edited = xml.replace("> 0-1 <", "> 0-2 <");
        assert!(matches!(
            parse(&edited),
            Err(BmapParseError::Checksum { .. })
        ));
        let v1 = xml.replace("version=\"2.0\"", "version=\"1.4\"");
        assert!(matches!(parse(&v1), Err(BmapParseError::Format(_))));
        let past_end = render(4 * 4096, 4096, &[one(3, 4)]);
        assert!(
            parse(&past_end)
                .unwrap_err()
                .to_string()
                .contains("outside")
        );
        let overlap = render(4 * 4096, 4096, &[one(0, 2), one(2, 3)]);
        assert!(
            parse(&overlap)
                .unwrap_err()
                .to_string()
                .contains("overlaps")
        );
        assert!(parse("garbage").is_err());
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,400}") {
            let _ = parse(&s);
            let _ = parse(&format!("<bmap version=\"2.0\"><ImageSize>{s}</ImageSize>"));
        }
    }

    #[test]
    fn file_checksum_is_of_the_text_with_the_field_zeroed() {
        let ranges = [BmapRange {
            first: 0,
            last: 2,
            sha256: "ab".repeat(32),
        }];
        let xml = render(3 * 4096, 4096, &ranges);
        let start = xml.find("<BmapFileChecksum> ").unwrap() + "<BmapFileChecksum> ".len();
        let sum = xml[start..start + 64].to_string();
        let zeroed = xml.replacen(&sum, &"0".repeat(64), 1);
        assert_eq!(hex::encode(Sha256::digest(zeroed.as_bytes())), sum);
        assert!(xml.contains("<MappedBlocksCount> 3 </MappedBlocksCount>"));
        assert!(xml.contains("<BlocksCount> 3 </BlocksCount>"));
        // XML comments must not contain "--".
        let comments = xml
            .split("<!--")
            .skip(1)
            .map(|c| c.split("-->").next().unwrap());
        assert!(comments.clone().count() > 3);
        for c in comments {
            assert!(!c.contains("--"), "{c}");
        }
        assert!(xml.contains(&format!(
            "<Range chksum=\"{}\"> 0-2 </Range>",
            "ab".repeat(32)
        )));
    }
}
