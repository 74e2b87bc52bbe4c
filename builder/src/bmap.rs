//! bmap v2.0 files (the format of `bmaptool`, Debian `bmap-tools`): an XML list of the 4 KiB
//! blocks of an image worth copying, each range with its sha256, and the sha256 of the file
//! itself computed with that field zeroed, exactly as `bmaptool` checks it.
//!
//! The used ranges come from [`crate::blockmap`] (the filesystems' allocation), not from
//! looking for zeros or holes. [`render`] is pure; [`write_bmap`] reads the image to checksum
//! the ranges. It deliberately doesn't copy or flash anything.

use std::io::{self, Read, Seek, SeekFrom, Write};

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::blockmap::BlockMap;

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
    use crate::blockmap::ByteRange;

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
