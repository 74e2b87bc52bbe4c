//! Overlays come from directories a user may have downloaded: the manifest parser, the static
//! template check and the sample render must refuse anything with an error, never panic or
//! hang the build.
#![no_main]

use libfuzzer_sys::fuzz_target;
use piforge::overlay::{check_template, vars};
use piforge_config::OverlayManifest;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match mode % 3 {
        0 => {
            let _ = OverlayManifest::parse(text);
        }
        1 => {
            let _ = vars::check(text, vars::Context::Static);
            let _ = vars::check(text, vars::Context::Live);
        }
        _ => {
            let _ = check_template(text, mode & 4 != 0);
        }
    }
});
