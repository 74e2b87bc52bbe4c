//! The fake-capacity check (issue 20): a counterfeit card claims more than it holds, and its
//! controller either wraps addresses past the real end (dropping high address bits) or loses
//! the writes there. Before a device gets a byte of the image, [`check_capacity`] writes a
//! distinct 4 KiB sentinel at spread offsets up to the claimed end ([`sentinel_offsets`]),
//! reads them all back bypassing caches, and refuses a card whose sentinels moved or vanished
//! ([`FlashError::FakeCapacity`], naming the real capacity). A refused card holds those
//! sentinels and nothing else; on a good card they are zeroed again before the image.
//! Deliberately not here: the write order (`engine`), opening devices (`target`).

use super::engine::{FlashError, target_err};
use super::target::{AlignedBuf, TargetIo};
use sha2::{Digest, Sha256};

fn digest(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Size of a sentinel block.
const SENTINEL: usize = 4096;
/// What every sentinel block starts with.
const SENTINEL_MAGIC: &[u8; 16] = b"PIFORGE-CAPACITY";

/// Where [`check_capacity`] puts its sentinels on a device of `cap` bytes (pure, sorted, 4 KiB
/// aligned, each whole inside `cap`): every multiple of a stride (the largest power of two
/// ≤ cap/64, at least 1 MiB: fewer than 128 of them), every power of two from 4 KiB, and the
/// last block. A device whose addresses wrap at a multiple of the stride, or at any power of
/// two (how counterfeit controllers drop high address bits), maps two of them onto one block.
/// Wraps at other sizes go unseen unless two sentinels happen to collide; a device that loses
/// writes past its real end is caught at the first sentinel there.
pub fn sentinel_offsets(cap: u64) -> Vec<u64> {
    let blocks_end = cap / SENTINEL as u64 * SENTINEL as u64;
    if blocks_end < SENTINEL as u64 {
        return vec![];
    }
    let last = blocks_end - SENTINEL as u64;
    let mut stride = 1u64 << 20;
    while stride * 2 <= cap / 64 {
        stride *= 2;
    }
    let mut v: Vec<u64> = (0..)
        .map(|i| i * stride)
        .take_while(|&o| o <= last)
        .collect();
    let mut p = SENTINEL as u64;
    while p <= last {
        v.push(p);
        p *= 2;
    }
    v.push(last);
    v.sort_unstable();
    v.dedup();
    v
}

fn sentinel(nonce: &[u8; 16], offset: u64, buf: &mut [u8]) {
    buf[..16].copy_from_slice(SENTINEL_MAGIC);
    buf[16..32].copy_from_slice(nonce);
    buf[32..40].copy_from_slice(&offset.to_le_bytes());
    // The rest: a keyed stream, so no two sentinels (nor a compressing or deduplicating
    // controller) see the same bytes.
    let mut block = digest(&buf[..40]);
    for chunk in buf[40..].chunks_mut(32) {
        chunk.copy_from_slice(&block[..chunk.len()]);
        block = digest(&block);
    }
}

/// The offset a sentinel of this run claims to have been written at, if `buf` is one.
fn sentinel_offset(nonce: &[u8; 16], buf: &[u8]) -> Option<u64> {
    if &buf[..16] != SENTINEL_MAGIC || &buf[16..32] != nonce {
        return None;
    }
    let at = u64::from_le_bytes(buf[32..40].try_into().expect("8 bytes"));
    let mut want = vec![0u8; buf.len()];
    sentinel(nonce, at, &mut want);
    (want == buf).then_some(at)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The fake-capacity check, before anything else is written to a device: a distinct 4 KiB
/// sentinel (magic, a random nonce of this run, its own offset, a keyed fill) at every offset
/// of [`sentinel_offsets`], in ascending order; sync; caches dropped (the device target reads
/// with `O_DIRECT` where it can); all read back. Every one must come back where it was
/// written. If one does not, the device is refused ([`FlashError::FakeCapacity`]) naming its
/// real capacity: the period its addresses wrap at (the gcd of how far sentinels moved), or
/// the first offset whose write was lost; it then holds those sentinels and nothing else. On a
/// good device the sentinel blocks are zeroed again (the image then writes over what it maps),
/// so no sentinel is left where the image does not write. Returns the number of sentinels.
pub fn check_capacity(target: &dyn TargetIo) -> Result<usize, FlashError> {
    let cap = target.capacity();
    let offsets = sentinel_offsets(cap);
    let nonce: [u8; 16] = rand::random();
    let mut buf = AlignedBuf::new(SENTINEL);
    for &o in &offsets {
        sentinel(&nonce, o, buf.as_mut_slice());
        target
            .write_at(buf.as_slice(), o)
            .map_err(target_err("writing a capacity sentinel", o))?;
    }
    target
        .sync()
        .and_then(|()| target.drop_cache())
        .map_err(target_err("syncing the capacity sentinels", 0))?;
    let mut moved: Vec<(u64, Option<u64>)> = Vec::new();
    for &o in &offsets {
        target
            .read_at(buf.as_mut_slice(), o)
            .map_err(target_err("reading a capacity sentinel back", o))?;
        let found = sentinel_offset(&nonce, buf.as_slice());
        if found != Some(o) {
            // `o` holds another offset's sentinel (that one wrapped onto it) or none at all.
            moved.push((o, found));
        }
    }
    if moved.is_empty() {
        let zeros = AlignedBuf::new(SENTINEL);
        for &o in &offsets {
            target
                .write_at(zeros.as_slice(), o)
                .map_err(target_err("clearing a capacity sentinel", o))?;
        }
        target
            .sync()
            .map_err(target_err("syncing the cleared sentinels", 0))?;
        return Ok(offsets.len());
    }
    // Wrapping: a sentinel written at `w` sits at `o` < `w`: the period divides w - o.
    let period = moved
        .iter()
        .filter_map(|&(o, f)| f.filter(|&w| w > o).map(|w| w - o))
        .fold(0, gcd);
    // Lost writes: nothing readable at `o` (and nothing wrapped onto it).
    let lost = moved
        .iter()
        .filter(|(_, f)| f.is_none())
        .map(|&(o, _)| o)
        .min();
    let real = match (period, lost) {
        (0, Some(l)) => l,
        (p, Some(l)) => p.min(l),
        (p, None) => p,
    };
    let (written_at, read_at) = moved
        .iter()
        .find_map(|&(o, f)| f.filter(|&w| w != o).map(|w| (w, Some(o))))
        .unwrap_or((lost.unwrap_or(0), None));
    Err(FlashError::FakeCapacity {
        claimed: cap,
        real,
        written_at,
        read_at,
        sentinels: offsets.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::Mutex;

    /// A device of `real` bytes claiming `claimed`: addresses wrap modulo `real`, or (with
    /// `lose`) writes past `real` are dropped and read back as zeros.
    struct Fake {
        data: Mutex<Vec<u8>>,
        claimed: u64,
        lose: bool,
    }

    impl Fake {
        fn new(real: usize, claimed: u64, lose: bool) -> Fake {
            Fake {
                data: Mutex::new((0..real).map(|i| (i % 253) as u8).collect()),
                claimed,
                lose,
            }
        }
    }

    impl TargetIo for Fake {
        fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            let mut d = self.data.lock().unwrap();
            let real = d.len() as u64;
            if self.lose && offset >= real {
                return Ok(());
            }
            let at = (offset % real) as usize;
            d[at..at + buf.len()].copy_from_slice(buf);
            Ok(())
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            let d = self.data.lock().unwrap();
            let real = d.len() as u64;
            if self.lose && offset >= real {
                buf.fill(0);
                return Ok(());
            }
            let at = (offset % real) as usize;
            buf.copy_from_slice(&d[at..at + buf.len()]);
            Ok(())
        }
        fn sync(&self) -> io::Result<()> {
            Ok(())
        }
        fn drop_cache(&self) -> io::Result<()> {
            Ok(())
        }
        fn capacity(&self) -> u64 {
            self.claimed
        }
        fn is_device(&self) -> bool {
            true
        }
    }

    #[test]
    fn sentinels_are_spread_aligned_and_inside() {
        let cap = (64u64 << 30) - 12345;
        let o = sentinel_offsets(cap);
        assert!(o.windows(2).all(|w| w[0] < w[1]));
        assert!(o.iter().all(|&x| x % 4096 == 0 && x + 4096 <= cap));
        assert_eq!(o[0], 0);
        assert_eq!(*o.last().unwrap(), cap / 4096 * 4096 - 4096);
        assert!(o.contains(&(32 << 30)) && o.contains(&(512 << 20)));
        assert!(o.len() < 128 + 40, "{}", o.len());
        assert!(sentinel_offsets(100).is_empty());
    }

    #[test]
    fn a_wrapping_or_write_losing_device_is_refused_with_its_real_capacity() {
        // Real capacities a counterfeit may have: powers of two and multiples of the stride.
        for (real, claimed) in [
            (8usize << 20, 64u64 << 20),
            (48 << 20, 128 << 20),
            (5 << 20, 32 << 20),
        ] {
            let t = Fake::new(real, claimed, false);
            let before = t.data.lock().unwrap().clone();
            let e = check_capacity(&t).unwrap_err();
            let FlashError::FakeCapacity { real: r, .. } = e else {
                panic!("{e}")
            };
            assert_eq!(r, real as u64, "{e}");
            assert!(e.to_string().contains("wrap"), "{e}");
            // Nothing but sentinel blocks changed.
            let after = t.data.lock().unwrap().clone();
            let offsets = sentinel_offsets(claimed);
            for (i, (a, b)) in before.iter().zip(&after).enumerate() {
                if a != b {
                    let i = i as u64;
                    assert!(
                        offsets
                            .iter()
                            .any(|&o| (o % real as u64..o % real as u64 + 4096).contains(&i)),
                        "byte {i} changed outside a sentinel"
                    );
                }
            }
        }
        let t = Fake::new(24 << 20, 64 << 20, true);
        let e = check_capacity(&t).unwrap_err();
        assert!(
            matches!(e, FlashError::FakeCapacity { real, read_at: None, .. } if real == 24 << 20),
            "{e}"
        );
        assert!(e.to_string().contains("lost"), "{e}");
    }

    #[test]
    fn a_good_device_passes_and_keeps_no_sentinel() {
        let t = Fake::new(64 << 20, 64 << 20, false);
        let n = check_capacity(&t).unwrap();
        assert_eq!(n, sentinel_offsets(64 << 20).len());
        let d = t.data.lock().unwrap();
        for o in sentinel_offsets(64 << 20) {
            let o = o as usize;
            assert!(
                d[o..o + 4096].iter().all(|&b| b == 0),
                "sentinel left at {o}"
            );
        }
        assert!(!d.windows(16).any(|w| w == SENTINEL_MAGIC));
    }
}
