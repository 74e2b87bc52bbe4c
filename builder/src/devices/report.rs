//! `piforge devices [--json]`: every candidate disk with its verdict under the default
//! policy ([`reports`]), as a table ([`table`]) or JSON ([`DeviceReport`]).
//!
//! Deliberately not here: discovery ([`super::list`]) and the rules ([`super::judge`]).

use std::io::Write;

use serde::Serialize;

use super::{Device, Policy, SafetyError, SysRoot, judge, list};
use crate::term::progress::human_bytes;

/// A device with its verdict under the default policy, as `piforge devices --json` prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DeviceReport<'a> {
    /// The device.
    #[serde(flatten)]
    pub device: &'a Device,
    /// Passes every rule without `--force` (image size not considered).
    pub flashable: bool,
    /// The rule it breaks ([`SafetyError::code`]), when not flashable.
    pub refusal: Option<&'static str>,
    /// The message, when not flashable.
    pub reason: Option<String>,
}

/// Judges each device under the default policy.
pub fn reports(devices: &[Device]) -> Vec<DeviceReport<'_>> {
    devices
        .iter()
        .map(|d| {
            let v = judge(d, None, &Policy::default()).err();
            DeviceReport {
                device: d,
                flashable: v.is_none(),
                refusal: v.as_ref().map(SafetyError::code),
                reason: v.map(|e| e.to_string()),
            }
        })
        .collect()
}

/// Renders the `piforge devices` table.
pub fn table(reports: &[DeviceReport<'_>]) -> String {
    let mut rows = vec![[
        "PATH".to_string(),
        "SIZE".into(),
        "MODEL".into(),
        "BUS".into(),
        "RM".into(),
        "MOUNTED".into(),
        "FLASHABLE".into(),
    ]];
    for r in reports {
        let d = r.device;
        let mut mounted: Vec<String> = d
            .mounts
            .iter()
            .map(|m| m.mount_point.display().to_string())
            .collect();
        mounted.dedup();
        let mut model = d.description();
        if let Some(b) = &d.backing_file {
            model = format!("loop: {}", b.display());
        }
        rows.push([
            d.path.display().to_string(),
            human_bytes(d.size),
            model,
            if d.emmc {
                "emmc".into()
            } else {
                d.bus.as_str().into()
            },
            if d.removable {
                "yes".into()
            } else {
                "no".into()
            },
            if mounted.is_empty() {
                "-".into()
            } else {
                mounted.join(",")
            },
            match (&r.refusal, &r.reason) {
                (Some(code), _) => format!("no: {code}"),
                _ => "yes".into(),
            },
        ]);
    }
    let mut s = crate::term::table::aligned(&rows);
    if reports.is_empty() {
        s.push_str("(no candidate disks found)\n");
    }
    for r in reports {
        if let Some(reason) = &r.reason {
            s.push_str(&format!("{}: {reason}\n", r.device.name));
        }
    }
    s
}

/// `piforge devices [--json]`: the candidate disks, with whether each may be flashed and why
/// not. JSON is an array of [`DeviceReport`].
pub fn cmd_devices(json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    cmd_devices_in(&SysRoot::host(), json, out)
}

/// [`cmd_devices`] over a given root (tests).
pub fn cmd_devices_in(root: &SysRoot, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let devices = list(root)?;
    let reports = reports(&devices);
    if json {
        serde_json::to_writer_pretty(&mut *out, &reports)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", table(&reports))?;
    }
    Ok(())
}
