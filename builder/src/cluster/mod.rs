//! Cluster: talking to the cards once they run, from the laptop. [`status`] (`piforge status`:
//! where each card of the batch stands) and [`inventory`] (`piforge inventory`: the Ansible
//! inventory) find nodes by mDNS or `--node`, and ask them through [`nodeapi`], which trusts
//! only answers that prove cluster membership with the key from `build::keystore`.
//!
//! Deliberately not here: anything that runs on a Pi (the `piforge-node` crate).

pub mod inventory;
pub mod nodeapi;
pub mod status;
