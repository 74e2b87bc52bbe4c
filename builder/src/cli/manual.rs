//! Shell completions and man pages, generated from the clap definitions in [`super`]
//! (`piforge completions SHELL`, `piforge manpages DIR`), so they can never disagree with the
//! options the binary really takes. `ci/release` puts both in the release archive.
//! Deliberately not here: any text of its own; every word comes from the clap doc comments.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::CommandFactory;

use super::Cli;

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut impl Write) -> anyhow::Result<()> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "piforge", out);
    Ok(())
}

/// Writes `piforge.1` and `piforge-SUB.1` for each subcommand into `dir` (each through a temp
/// file and a rename), and returns their paths.
pub fn manpages(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cmd = Cli::command();
    let mut pages = vec![("piforge".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands() {
        let page = sub
            .clone()
            .bin_name(format!("piforge {}", sub.get_name()))
            .display_name(format!("piforge-{}", sub.get_name()));
        pages.push((format!("piforge-{}", sub.get_name()), page));
    }
    let mut written = Vec::new();
    for (name, page) in pages {
        let mut roff = Vec::new();
        clap_mangen::Man::new(page)
            .title(name.clone())
            .render(&mut roff)
            .with_context(|| format!("rendering {name}.1"))?;
        let path = dir.join(format!("{name}.1"));
        piforge::io::write_atomic(&path, &roff, 0o644)?;
        written.push(path);
    }
    Ok(written)
}
