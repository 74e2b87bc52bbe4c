//! The subcommands, `cmd_<name>`: run a request and print its result to `out` (stdout).
//! Progress and logs go to stderr.

use std::io::Write;
use std::path::Path;

use crate::acquire::catalog::Catalog;
use crate::build::assemble::{self, BuildRequest};
use crate::build::export::{self, ExportRequest};
use crate::flash::{self, FlashRequest};
use crate::image::inspect;

/// `piforge images [--json]`
pub fn cmd_images(json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let cat = Catalog::builtin();
    if json {
        serde_json::to_writer_pretty(&mut *out, &cat.images)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", cat.table())?;
    }
    Ok(())
}

/// `piforge build ...`
pub fn cmd_build(req: BuildRequest, out: &mut impl Write) -> anyhow::Result<()> {
    let o = assemble::build(&req)?;
    if o.new_key {
        tracing::info!(cluster = %o.batch.cluster, "made a new cluster key (kept in the key store)");
    }
    writeln!(out, "image  {}", o.image.display())?;
    if o.batch.cards.is_empty() {
        writeln!(
            out,
            "cards  none: the image is cloneable (hostnames from the hardware serial)"
        )?;
    }
    for c in &o.batch.cards {
        let role = c
            .role
            .as_deref()
            .map(|r| format!("  role {r}"))
            .unwrap_or_default();
        writeln!(out, "card {:>2} {}{role}", c.index, c.hostname)?;
    }
    writeln!(
        out,
        "next   piforge export --out {} --card 1 -o card1.img.xz",
        req.out.display()
    )?;
    if !o.batch.cards.is_empty() {
        writeln!(
            out,
            "ssh    ssh -o UserKnownHostsFile={} {}@{}.local",
            req.out
                .join(crate::build::batch::KNOWN_HOSTS_FILE)
                .display(),
            req.user,
            o.batch.cards[0].hostname
        )?;
    }
    Ok(())
}

/// `piforge known-hosts`: the batch's known_hosts lines (also in `<out>/known_hosts`).
pub fn cmd_known_hosts(dir: &Path, out: &mut impl Write) -> anyhow::Result<()> {
    let b = crate::build::batch::Batch::load(dir)?;
    let text = b.known_hosts();
    if text.is_empty() {
        anyhow::bail!(
            "the batch in {} has no host keys (built by an older piforge, or no --cards); \
             rebuild it to get a known_hosts",
            dir.display()
        );
    }
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// `piforge export ...`
pub fn cmd_export(req: ExportRequest, out: &mut impl Write) -> anyhow::Result<()> {
    let o = export::export(&req)?;
    writeln!(out, "{}  {}", o.sha256, o.output.display())?;
    writeln!(
        out,
        "{}: mode 0600, readable by you only (it holds the card's secrets)",
        o.output.display()
    )?;
    Ok(())
}

/// `piforge inspect IMAGE [--json]`
pub fn cmd_inspect(image: &Path, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let i = inspect::inspect(image)?;
    if json {
        serde_json::to_writer_pretty(&mut *out, &i)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", inspect::render_text(&i))?;
    }
    Ok(())
}

/// `piforge flash ...`: one line per target on stdout; fails if any target failed (after all
/// of them finished: one bad card does not stop the others).
pub fn cmd_flash(req: &FlashRequest, out: &mut impl Write) -> anyhow::Result<()> {
    let results = flash::flash(req)?;
    let mut failed = Vec::new();
    for (t, r) in req.targets.iter().zip(results) {
        match r {
            Ok(o) => writeln!(out, "{}", flash::render_outcome(&o, req.verify_only))?,
            Err(e) => {
                tracing::error!(target = %t.display(), "{e:#}");
                failed.push(format!("{}: {e:#}", t.display()));
            }
        }
    }
    out.flush()?;
    match failed.len() {
        0 => Ok(()),
        1 => anyhow::bail!("{}", failed[0]),
        n => anyhow::bail!("{n} targets failed: {}", failed.join("; ")),
    }
}
