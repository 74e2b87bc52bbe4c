//! Parsers for the kernel's mount and swap tables: `/proc/self/mountinfo` and `/proc/swaps`.
//!
//! Pure functions over the text (the files are untrusted input as far as the parser is concerned:
//! a mount point may contain any byte, escaped by the kernel as `\ooo`). Malformed lines are
//! skipped, never fatal: a half-understood mount table must not stop `piforge devices`, and the
//! safety rules only ever *add* refusals from what is found. Deliberately does not read the files
//! (the caller does, from an injectable root) and does not resolve symlinks.

use std::path::PathBuf;

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor` of the mounted device (`0:N` for btrfs subvolumes, tmpfs, overlay...).
    pub dev: (u32, u32),
    /// Where it is mounted, unescaped.
    pub mount_point: PathBuf,
    /// The filesystem type (`ext4`, `vfat`...).
    pub fstype: String,
    /// The mount source (`/dev/sdb1`, `/dev/mapper/vg-root`, `tmpfs`...), unescaped.
    pub source: String,
}

/// One active swap area of `/proc/swaps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swap {
    /// The swap device or file, unescaped.
    pub path: PathBuf,
    /// `true` for `partition`, `false` for `file`.
    pub partition: bool,
}

/// Undoes the kernel's octal escaping (`\040` space, `\011` tab, `\012` newline, `\134`
/// backslash). A backslash not followed by three octal digits is kept as is.
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = u32::from(b[i + 1] - b'0') * 64
                + u32::from(b[i + 2] - b'0') * 8
                + u32::from(b[i + 3] - b'0');
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    // Non-UTF-8 mount points are shown lossily; they are only compared with our own list of
    // system mount points, which are ASCII.
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `/proc/self/mountinfo` (see proc(5)): `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS
/// [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS`. Lines that do not fit are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let mut f = line.split(' ');
    let _id = f.next()?;
    let _parent = f.next()?;
    let (maj, min) = f.next()?.split_once(':')?;
    let dev = (maj.parse().ok()?, min.parse().ok()?);
    let _root = f.next()?;
    let mount_point = f.next()?;
    let _opts = f.next()?;
    // Optional fields (`shared:1 master:2`), then the separator.
    loop {
        if f.next()? == "-" {
            break;
        }
    }
    let fstype = f.next()?;
    let source = f.next()?;
    if mount_point.is_empty() {
        return None;
    }
    Some(Mount {
        dev,
        mount_point: PathBuf::from(unescape(mount_point)),
        fstype: unescape(fstype),
        source: unescape(source),
    })
}

/// Parses `/proc/swaps`: a header line, then `FILENAME TYPE SIZE USED PRIORITY` separated by
/// spaces or tabs. Lines that do not fit are skipped.
pub fn parse_swaps(text: &str) -> Vec<Swap> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let path = f.next()?;
            let kind = f.next()?;
            Some(Swap {
                path: PathBuf::from(unescape(path)),
                partition: kind == "partition",
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw
23 22 8:1 / /boot/firmware rw,relatime shared:2 - vfat /dev/sda1 rw,fmask=0022
40 22 8:17 / /media/me/my\\040card rw,nosuid shared:40 master:3 - vfat /dev/sdb1 rw
41 22 0:45 / /tmp rw - tmpfs tmpfs rw
garbage line
42 22 x:y / /bad rw - ext4 /dev/sdc1 rw
";

    #[test]
    fn mountinfo_lines_parse_with_optional_fields_and_escapes() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 4, "{m:?}");
        assert_eq!(m[0].dev, (8, 2));
        assert_eq!(m[0].mount_point, PathBuf::from("/"));
        assert_eq!(m[0].source, "/dev/sda2");
        assert_eq!(m[1].mount_point, PathBuf::from("/boot/firmware"));
        assert_eq!(m[2].mount_point, PathBuf::from("/media/me/my card"));
        assert_eq!(m[2].fstype, "vfat");
        assert_eq!(m[3].source, "tmpfs");
    }

    #[test]
    fn unescape_handles_octal_and_leaves_the_rest() {
        assert_eq!(unescape(r"a\040b\011c\134d"), "a b\tc\\d");
        assert_eq!(unescape(r"tail\04"), r"tail\04");
        assert_eq!(unescape(r"\999"), r"\999");
        assert_eq!(
            unescape(r"\777"),
            r"\777",
            "out of byte range stays literal"
        );
        assert_eq!(unescape(""), "");
    }

    #[test]
    fn swaps_parse_partitions_and_files() {
        let s = parse_swaps(
            "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
             /dev/sda3                               partition\t8388604\t\t0\t\t-2\n\
             /swap\\040file                          file\t\t1048572\t\t0\t\t-3\n",
        );
        assert_eq!(
            s,
            vec![
                Swap {
                    path: "/dev/sda3".into(),
                    partition: true
                },
                Swap {
                    path: "/swap file".into(),
                    partition: false
                },
            ]
        );
    }
}
