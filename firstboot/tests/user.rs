//! Issue 17, finding 3, on the Pi: a card whose user is a system account (`daemon`, home
//! `/usr/sbin`; `systemd-network`, home `/`) is refused by firstboot before anything changes,
//! even if the card never went through `piforge build` (a hand-edited card.toml): no password,
//! no SSH keys, no sudo for it, and its home is not chmod'ed or chown'ed.

mod common;

use common::*;
use piforge_firstboot::apply::RecordingSystem;
use piforge_firstboot::run_firstboot;

#[test]
fn issue17_firstboot_refuses_a_system_account_and_changes_nothing() {
    for user in ["daemon", "systemd-network"] {
        let f = Fake::new(Rel::Bookworm, true, "100000002a3f9a2c");
        let mut card = full_card();
        card.access.user = user.into();
        f.put_payload(&card);
        let before = snapshot(&f.root, None);
        let mut sys = RecordingSystem::default();
        let e = run_firstboot(&f.request(hooks(1)), &mut sys)
            .expect_err("a system account was accepted as the card's user");
        let e = format!("{e:#}");
        assert!(
            e.contains("access.user") && e.contains("system account"),
            "{e}"
        );
        let changed: Vec<String> = diff(&before, &snapshot(&f.root, None))
            .into_iter()
            .filter(|d| !d.ends_with("piforge/firstboot.log"))
            .collect();
        assert!(changed.is_empty(), "{user}: {changed:#?}");
        assert!(sys.owners.is_empty(), "{user}: chowned {:?}", sys.owners);
        let log = f.read("boot/firmware/piforge/firstboot.log");
        assert!(log.contains("system account"), "{log}");
    }
}
