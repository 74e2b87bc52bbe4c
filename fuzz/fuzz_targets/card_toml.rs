//! card.toml, node.toml and overlay.toml come from a FAT partition anyone could have edited:
//! parsing must never panic, and what parses must render and parse back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use piforge_config::{Card, NodeConfig, OverlayManifest, cmdline};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(card) = Card::parse(text) {
        let again = Card::parse(&card.render()).expect("a parsed card renders to a valid card");
        assert_eq!(again, card);
        let _ = card.redacted().to_toml();
    }
    if let Ok(node) = NodeConfig::parse(text) {
        assert_eq!(NodeConfig::parse(&node.render()).expect("round trip"), node);
    }
    let _ = OverlayManifest::parse(text);
    // cmdline.txt is also read from the FAT.
    let removed = cmdline::remove(text);
    assert!(!cmdline::has_ours(&removed) || !cmdline::has_ours(text) || removed != text);
    assert_eq!(cmdline::remove(&cmdline::add(&removed, "/boot/firmware")), removed);
});
