//! `piforge completions` and `piforge manpages` (issue 14): generated from the clap
//! definitions, checked by the real consumers — bash runs the completion function, groff
//! renders every man page with warnings on.

use std::process::Command;

fn piforge(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_piforge"))
        .args(args)
        .output()
        .expect("running piforge");
    assert!(
        out.status.success(),
        "piforge {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn bash_completes_subcommands_and_flash_options() {
    let d = tempfile::tempdir().unwrap();
    let script = d.path().join("piforge.bash");
    std::fs::write(&script, piforge(&["completions", "bash"]).stdout).unwrap();
    let complete = |words: &str, cword: usize| {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {}; COMP_WORDS=({words}); COMP_CWORD={cword}; \
                 COMP_LINE='{words}'; COMP_POINT=${{#COMP_LINE}}; \
                 _piforge piforge \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
                 printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                script.display()
            ))
            .output()
            .expect("running bash");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let subs = complete("piforge fl", 1);
    assert_eq!(subs.trim(), "flash", "{subs}");
    let opts = complete("piforge flash --no-e", 2);
    assert_eq!(opts.trim(), "--no-eject", "{opts}");
    let shells = complete("piforge completions p", 2);
    assert_eq!(shells.trim(), "powershell", "{shells}");
}

#[test]
fn every_shell_gets_a_script_naming_every_subcommand() {
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let s = String::from_utf8(piforge(&["completions", shell]).stdout).unwrap();
        for sub in ["flash", "devices", "build", "completions", "manpages"] {
            assert!(s.contains(sub), "{shell} lacks {sub}");
        }
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_piforge"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(
        bad.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn man_pages_render_cleanly_with_groff() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("man1");
    let listed = String::from_utf8(piforge(&["manpages", dir.to_str().unwrap()]).stdout).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for want in [
        "piforge.1",
        "piforge-flash.1",
        "piforge-devices.1",
        "piforge-completions.1",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    assert_eq!(listed.lines().count(), names.len(), "{listed}");
    assert!(!names.iter().any(|n| n.ends_with(".part")), "{names:?}");
    for n in &names {
        let out = Command::new("groff")
            // -P-cbou: plain text, no overstriking, so the words can be searched.
            .args(["-man", "-Tutf8", "-ww", "-P-cbou"])
            .arg(dir.join(n))
            .output()
            .expect("running groff (Debian package groff-base)");
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && warnings.is_empty(),
            "{n}: {warnings}"
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("piforge"), "{n}");
        if n == "piforge-flash.1" {
            assert!(text.contains("no-eject"), "{text}");
            assert!(text.contains("PhysicalDrive2"), "{text}");
        }
    }
}
