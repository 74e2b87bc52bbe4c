//! Which cards of a batch a `piforge flash` writes, and the records that keep two flash
//! processes apart: a lock file per card while it is written ([`claim_card`]), and the
//! `flashed` mark in `batch.toml`, set under a batch-wide lock ([`mark_flashed`]).
//!
//! Deliberately not here: writing or verifying anything (`engine`), personalising the card
//! (`super::personalise`), the batch format itself (`build::batch`).

use std::path::Path;

use anyhow::{Context, bail};

use super::FlashRequest;
use crate::build::batch::Batch;

/// A card this process is writing: an exclusive `flock` on `<batch>/.flash-card-<K>.lock`,
/// released when dropped or when the process dies (so a killed flash never leaves a card
/// claimed). The lock files stay; they are empty.
#[derive(Debug)]
pub struct CardClaim {
    _lock: crate::io::hostfs::FileLock,
}

/// Claims card `k` of the batch in `dir`; `None` when another process holds it.
pub fn claim_card(dir: &Path, k: u32) -> anyhow::Result<Option<CardClaim>> {
    let path = dir.join(format!(".flash-card-{k}.lock"));
    let lock = crate::io::hostfs::lock(&path, false)
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(lock.map(|l| CardClaim { _lock: l }))
}

/// Records card `k` as flashed in `batch.toml` (re-read, changed, written atomically, under
/// the batch-wide lock `<batch>/.batch.lock` so concurrent processes do not lose records).
pub fn mark_flashed(dir: &Path, k: u32) -> anyhow::Result<()> {
    let path = dir.join(".batch.lock");
    let _lock = crate::io::hostfs::lock(&path, true)
        .with_context(|| format!("locking {}", path.display()))?;
    let mut b = Batch::load(dir)?;
    let c = b
        .cards
        .iter_mut()
        .find(|c| c.index == k)
        .with_context(|| format!("the batch has no card {k}"))?;
    c.flashed = true;
    b.save(dir)
}

/// What each target gets: a card (index, hostname), or `None` for the cloneable image.
pub(super) type Picks = Vec<Option<(u32, String)>>;

/// The cards the targets get, claimed: `--card K`, or the next unflashed ones in order that
/// no other `piforge flash` is writing.
pub(super) fn pick_cards(b: &Batch, req: &FlashRequest) -> anyhow::Result<(Picks, Vec<CardClaim>)> {
    if let Some(k) = req.card {
        let c = b.card(k)?;
        // Reading a card back does not change the batch: no claim needed.
        if req.verify_only {
            return Ok((vec![Some((c.index, c.hostname.clone()))], vec![]));
        }
        let Some(claim) = claim_card(&req.batch_dir, k)? else {
            bail!(
                "card {k} ({}) is being flashed by another piforge process right now; wait \
                 for it, or pick another card",
                c.hostname
            );
        };
        return Ok((vec![Some((c.index, c.hostname.clone()))], vec![claim]));
    }
    if b.cards.is_empty() {
        // A cloneable image: every target gets the same bytes.
        return Ok((vec![None; req.targets.len()], vec![]));
    }
    if req.verify_only {
        bail!("--verify-only with a batch needs --card K (which card to compare with)");
    }
    let mut next = Vec::new();
    let mut claims = Vec::new();
    let mut busy = Vec::new();
    for c in b.cards.iter().filter(|c| !c.flashed) {
        if next.len() == req.targets.len() {
            break;
        }
        match claim_card(&req.batch_dir, c.index)? {
            Some(claim) => {
                // Another process may have finished this card (recorded, then released its
                // claim) since the batch was read: the record is made before the release.
                if Batch::load(&req.batch_dir)?.card(c.index)?.flashed {
                    continue;
                }
                next.push(Some((c.index, c.hostname.clone())));
                claims.push(claim);
            }
            None => busy.push(c.index.to_string()),
        }
    }
    if next.len() < req.targets.len() {
        let busy = if busy.is_empty() {
            String::new()
        } else {
            format!(
                " (card(s) {} are being flashed by another piforge process)",
                busy.join(", ")
            )
        };
        bail!(
            "the batch has {} card(s) left to flash for {} target(s){busy}; rebuild with more \
             --cards, or re-flash one with --card K",
            next.len(),
            req.targets.len()
        );
    }
    Ok((next, claims))
}
