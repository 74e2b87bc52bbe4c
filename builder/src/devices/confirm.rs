//! Asking before anything is destroyed: [`confirm_text`] says what the target holds,
//! [`confirm_target`] wants `yes` (or the device's name) unless `--yes`, and refuses when
//! stdin is not a terminal; [`confirm_stdin`] runs it on the real terminal.
//!
//! Deliberately not here: judging the target (`target`, `safety`).

use std::io::{BufRead, IsTerminal, Write};

use super::{SafetyError, Target, TargetKind};
use crate::term::progress::human_bytes;

/// What will be destroyed, for the confirmation prompt: the disk (model, size, bus) and every
/// partition with its size, label and mount points; or the file to overwrite or create.
pub fn confirm_text(t: &Target) -> String {
    let d = match &t.kind {
        TargetKind::File {
            existing_len: Some(n),
        } => {
            return format!(
                "{} will be overwritten (a regular file, now {}).\n",
                t.path.display(),
                human_bytes(*n)
            );
        }
        TargetKind::File { existing_len: None } => {
            return format!("{} will be created (a regular file).\n", t.path.display());
        }
        TargetKind::Device(d) => d,
    };
    let mut s = format!(
        "{}: {}, {}, {}{}\n",
        t.path.display(),
        d.description(),
        human_bytes(d.size),
        d.bus.as_str(),
        if d.removable { ", removable" } else { "" }
    );
    if let Some(b) = &d.backing_file {
        s.push_str(&format!("  loop device backed by {}\n", b.display()));
    }
    s.push_str("EVERYTHING on it will be destroyed:\n");
    if d.partitions.is_empty() {
        s.push_str("  (no partitions)\n");
    }
    for p in &d.partitions {
        s.push_str(&format!(
            "  {:<12} {:>10}  {}",
            p.name,
            human_bytes(p.size),
            p.label.as_deref().unwrap_or("(no label)")
        ));
        for m in &p.mount_points {
            s.push_str(&format!("  mounted at {} (will be unmounted)", m.display()));
        }
        s.push('\n');
    }
    for m in d
        .mounts
        .iter()
        .filter(|m| !d.partitions.iter().any(|p| p.path == m.device))
    {
        s.push_str(&format!(
            "  whole disk mounted at {} (will be unmounted)\n",
            m.mount_point.display()
        ));
    }
    for n in &t.notes {
        s.push_str(&format!("note: {n}\n"));
    }
    s
}

/// Prints `prompt`, reads one line, and returns whether it is `yes` or one of `also` (e.g. the
/// device name). End of input or a read error is a no.
pub fn confirm_with(
    prompt: &str,
    also: &[&str],
    input: &mut impl BufRead,
    out: &mut impl Write,
) -> bool {
    if write!(out, "{prompt}").and_then(|()| out.flush()).is_err() {
        return false;
    }
    let mut line = String::new();
    match input.read_line(&mut line) {
        Ok(0) | Err(_) => false,
        Ok(_) => {
            let a = line.trim();
            a == "yes" || also.iter().any(|x| !x.is_empty() && a == *x)
        }
    }
}

/// [`confirm_with`] accepting only `yes`.
pub fn confirm(prompt: &str, input: &mut impl BufRead, out: &mut impl Write) -> bool {
    confirm_with(prompt, &[], input, out)
}

/// Asks for confirmation on `input`/`out` unless `yes`: prints [`confirm_text`], then wants
/// `yes` or the device's name (`sdb` or `/dev/sdb`). `interactive` is whether stdin is a
/// terminal; without one and without `yes` it refuses ([`SafetyError::NotInteractive`]).
pub fn confirm_target(
    t: &Target,
    yes: bool,
    interactive: bool,
    input: &mut impl BufRead,
    out: &mut impl Write,
) -> Result<(), SafetyError> {
    if yes {
        return Ok(());
    }
    if !interactive {
        return Err(SafetyError::NotInteractive);
    }
    let _ = write!(out, "{}", confirm_text(t));
    let full = t.path.to_string_lossy().into_owned();
    let short = t
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prompt = format!("Type yes (or {short}) to write {full}: ");
    if confirm_with(&prompt, &[&full, &short], input, out) {
        Ok(())
    } else {
        Err(SafetyError::Declined)
    }
}

/// [`confirm_target`] on the real stdin and stderr.
pub fn confirm_stdin(t: &Target, yes: bool) -> Result<(), SafetyError> {
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    confirm_target(
        t,
        yes,
        interactive,
        &mut stdin.lock(),
        &mut std::io::stderr(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirm_accepts_only_yes() {
        let mut out = Vec::new();
        assert!(confirm("go? ", &mut "yes\n".as_bytes(), &mut out));
        assert!(confirm("go? ", &mut "  yes  \r\n".as_bytes(), &mut out));
        assert!(!confirm("go? ", &mut "YES please\n".as_bytes(), &mut out));
        assert!(!confirm("go? ", &mut "".as_bytes(), &mut out));
        assert!(String::from_utf8_lossy(&out).starts_with("go? "));
    }
}
