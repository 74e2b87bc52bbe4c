//! Command-line parsing: clap types in, checked requests out. No logic beyond checking and
//! defaulting arguments lives here; the library never sees clap.
//!
//! This folder belongs to the binary (`mod cli` in `main.rs`), as `cli.rs` does in firstboot
//! and node: the `piforge` library has no clap in it. [`manual`] makes the shell completions
//! and man pages from these types.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use piforge::acquire::cache::{BaseRequest, Cache};
use piforge::acquire::catalog::Catalog;
use piforge::acquire::fetch::Source;
use piforge::arch::Arch;
use piforge::build::assemble::{BuildRequest, PasswordSpec, WifiSpec};
use piforge::build::export::ExportRequest;
use piforge::cluster::inventory::{InventoryOutput, InventoryRequest};
use piforge::flash::FlashRequest;
use piforge::flash::engine::WriteOptions;

pub mod manual;

/// Catalog entry built when neither --image nor --from is given.
pub const DEFAULT_IMAGE: &str = "trixie-lite-arm64";

/// Turn a stock Raspberry Pi OS image into a self-assembling cluster.
///
/// `piforge build --cards 4` fetches Raspberry Pi OS (cached, checksummed), puts the piforge
/// first-boot program, node agent and a card config on its boot partition, and writes a batch:
/// one cloneable image plus 4 card identities. Every card boots with its own hostname,
/// machine-id and SSH keys, gets an address by DHCP and joins the cluster by itself.
#[derive(Debug, Parser)]
#[command(name = "piforge", version, help_expected = true, term_width = 80)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// No progress output (errors and results only).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the base images piforge knows (images.toml).
    Images(ImagesArgs),
    /// Build a batch: a cloneable image and N card identities.
    Build(Box<BuildArgs>),
    /// Write one complete image (card K personalised, or the cloneable one).
    Export(ExportArgs),
    /// Show partitions, release, boot mount, cmdline and card (secrets redacted) of an image.
    Inspect(InspectArgs),
    /// Print the Ansible inventory of a running cluster (found by mDNS, or --node).
    Inventory(InventoryArgs),
    /// Write the next card of a batch (or any image) to SD cards or image files, verified.
    Flash(FlashArgs),
    /// List the disks that could be flashed, and why the others can't.
    Devices(DevicesArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell) to stdout.
    Completions(CompletionsArgs),
    /// Write the man pages (piforge.1 and one per subcommand) into a directory.
    Manpages(ManpagesArgs),
    /// Show each card of the batch: not flashed, flashed, seen on the LAN, joined.
    Status(StatusArgs),
    /// Print known_hosts lines for the batch's cards (their SSH host keys).
    KnownHosts(KnownHostsArgs),
}

/// `piforge completions`
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, powershell (or elvish).
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `piforge manpages`
#[derive(Debug, Args)]
pub struct ManpagesArgs {
    /// Directory to write piforge.1 and piforge-SUBCOMMAND.1 into (created if missing).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// `piforge status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Batch directory (as given to `build --out`).
    #[arg(long, value_name = "DIR", default_value = "piforge-out")]
    pub out: PathBuf,
    /// Also ask this node's HTTP API (repeatable; mDNS finds the others).
    #[arg(long, value_name = "HOST:PORT")]
    pub node: Vec<String>,
    /// Do not look for nodes by mDNS.
    #[arg(long)]
    pub no_mdns: bool,
    /// Refresh until every flashed card has joined; exit 1 if some did not
    /// within --timeout.
    #[arg(long)]
    pub watch: bool,
    /// Seconds --watch waits for every flashed card to join.
    #[arg(long, value_name = "SECS", default_value_t = 900.0)]
    pub timeout: f64,
    /// Seconds one look at the LAN takes at most (mDNS, HTTP).
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    pub look: f64,
    /// Print JSON (one object per refresh with --watch).
    #[arg(long)]
    pub json: bool,
    /// Check the nodes' answers with the cluster key in this file (default: the key
    /// store's key of the batch's cluster).
    #[arg(long, value_name = "F")]
    pub key_file: Option<PathBuf>,
}

fn seconds(flag: &str, v: f64) -> anyhow::Result<Duration> {
    if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
        bail!("{flag} {v}: give seconds between 0 and 86400");
    }
    Ok(Duration::from_secs_f64(v))
}

impl StatusArgs {
    /// Checks the arguments and turns them into a request.
    pub fn into_request(self) -> anyhow::Result<piforge::cluster::status::StatusRequest> {
        for n in &self.node {
            if n.rsplit_once(':')
                .is_none_or(|(_, p)| p.parse::<u16>().is_err())
            {
                bail!("--node {n}: write it as HOST:PORT, e.g. --node 192.168.1.21:8080");
            }
        }
        Ok(piforge::cluster::status::StatusRequest {
            batch_dir: self.out,
            nodes: self.node,
            mdns: !self.no_mdns,
            look: seconds("--look", self.look)?,
            watch: self.watch,
            timeout: seconds("--timeout", self.timeout)?,
            json: self.json,
            key_file: self.key_file,
        })
    }
}

/// `piforge known-hosts`
#[derive(Debug, Args)]
pub struct KnownHostsArgs {
    /// Batch directory (as given to `build --out`).
    #[arg(long, value_name = "DIR", default_value = "piforge-out")]
    pub out: PathBuf,
}

/// `piforge images`
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `piforge build`
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Catalog image to start from (see `piforge images`).
    #[arg(long, value_name = "NAME", conflicts_with = "from")]
    pub image: Option<String>,
    /// Start from this image file or URL (.img, .img.xz, .img.gz, .img.zst, .zip).
    #[arg(long, value_name = "PATH|URL")]
    pub from: Option<String>,
    /// Number of personalised cards (hostnames PREFIX-01...). Without it the image is
    /// cloneable: each Pi names itself from its hardware serial.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub cards: u32,
    /// Cluster name. The first build of a name makes its key; later builds reuse it.
    #[arg(long, value_name = "NAME", default_value = "piforge")]
    pub cluster: String,
    /// Hostname prefix.
    #[arg(long, value_name = "P", default_value = "pi")]
    pub hostname_prefix: String,
    /// Login user (created, or the image's first user renamed).
    #[arg(long, value_name = "U", default_value = "pi")]
    pub user: String,
    /// Let --user be root (it gets the password and SSH keys). Without it root
    /// stays locked and the user must be a regular account.
    #[arg(long)]
    pub allow_root: bool,
    /// File whose first line is the password ('-': stdin). Hashed here; never stored in clear.
    #[arg(long, value_name = "F", conflicts_with = "password_hash")]
    pub password_file: Option<PathBuf>,
    /// A ready crypt(3) password hash ($6$... or $y$...).
    #[arg(long, value_name = "H")]
    pub password_hash: Option<String>,
    /// Refused: a password on the command line ends up in shell history. Use --password-file.
    #[arg(long, value_name = "P", hide = true)]
    pub password: Option<String>,
    /// SSH public key file for the user (repeatable).
    #[arg(long, value_name = "FILE")]
    pub ssh_key: Vec<PathBuf>,
    /// Wi-Fi network name.
    #[arg(long, value_name = "S", requires_all = ["wifi_psk_file", "wifi_country"])]
    pub wifi_ssid: Option<String>,
    /// File whose first line is the Wi-Fi passphrase.
    #[arg(long, value_name = "F", requires = "wifi_ssid")]
    pub wifi_psk_file: Option<PathBuf>,
    /// Wi-Fi regulatory country (two letters, e.g. DE).
    #[arg(long, value_name = "CC", requires = "wifi_ssid")]
    pub wifi_country: Option<String>,
    /// Default overlay: every card without a --role gets it (repeatable; see
    /// overlays/).
    #[arg(long, value_name = "NAME")]
    pub overlay: Vec<String>,
    /// Give card K the role (overlay) NAME instead of the defaults and the tag
    /// role=NAME, e.g. --role 1=lb or --role 1=lb,metrics; cards K to L:
    /// --role 2..4=web,db (repeatable).
    #[arg(long, value_name = "K=NAME")]
    pub role: Vec<String>,
    /// db overlay: synchronous replication (a commit waits for a replica, so a
    /// failover loses nothing acknowledged; writes slow down by a round trip).
    #[arg(long)]
    pub db_synchronous: bool,
    /// Architecture (default: detected from the image).
    #[arg(long, value_name = "arm64|armhf")]
    pub arch: Option<Arch>,
    /// Seed for reproducible output: layout, timestamps, ids. Never secrets:
    /// cluster keys and password salts always come from the OS.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Release image: Pi binaries and overlays but no card, so no cluster key,
    /// password or Wi-Fi; `piforge build --from` it adds the card.
    #[arg(long)]
    pub no_card: bool,
    /// Output directory of the batch.
    #[arg(long, value_name = "DIR", default_value = "piforge-out")]
    pub out: PathBuf,
    /// Directory with the Pi binaries (default: embedded, or payload/ beside piforge).
    #[arg(long, value_name = "DIR")]
    pub payload: Option<PathBuf>,
    /// Directory with overlays (default: ./overlays).
    #[arg(long, value_name = "DIR")]
    pub overlays: Option<PathBuf>,
    /// Download and image cache (default: the user's cache dir).
    #[arg(long, value_name = "DIR", env = "PIFORGE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Use the cluster key in this file (64 hex digits) instead of the key store.
    #[arg(long, value_name = "F")]
    pub key_file: Option<PathBuf>,
    /// Static seed node host:port (repeatable), in addition to mDNS discovery.
    #[arg(long, value_name = "HOST:PORT")]
    pub join: Vec<String>,
    /// Do not use mDNS discovery.
    #[arg(long)]
    pub no_mdns: bool,
    /// Time zone, e.g. Europe/Berlin.
    #[arg(long, value_name = "TZ")]
    pub timezone: Option<String>,
    /// Keyboard layout, e.g. de.
    #[arg(long, value_name = "MAP")]
    pub keymap: Option<String>,
    /// Locale, e.g. en_GB.UTF-8.
    #[arg(long, value_name = "LOCALE")]
    pub locale: Option<String>,
    /// MQTT broker of every card, e.g. mqtts://alerts@mq.example.com:8883 (TLS,
    /// user alerts); wins over the alert overlay's local broker.
    #[arg(long, value_name = "URL")]
    pub mqtt_url: Option<String>,
    /// File whose first line is the MQTT password ('-': stdin); on the card
    /// until its first boot, then only in the Pi's node.toml (0600).
    #[arg(long, value_name = "F", requires = "mqtt_url")]
    pub mqtt_password_file: Option<PathBuf>,
    /// PEM file of the broker's CA (default: the Pi's system CA certificates).
    #[arg(long, value_name = "F", requires = "mqtt_url")]
    pub mqtt_ca_file: Option<PathBuf>,
    /// PEM client certificate for the broker (with --mqtt-client-key).
    #[arg(long, value_name = "F", requires_all = ["mqtt_url", "mqtt_client_key"])]
    pub mqtt_client_cert: Option<PathBuf>,
    /// PEM private key of --mqtt-client-cert.
    #[arg(long, value_name = "F", requires = "mqtt_client_cert")]
    pub mqtt_client_key: Option<PathBuf>,
}

/// `piforge export`
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Batch directory (as given to `build --out`).
    #[arg(long, value_name = "DIR", default_value = "piforge-out")]
    pub out: PathBuf,
    /// Personalise card K (default: the cloneable image).
    #[arg(long, value_name = "K")]
    pub card: Option<u32>,
    /// Output file; a name ending in .xz is compressed (multi-threaded).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
}

/// `piforge inspect`
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Image file (raw .img).
    pub image: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `piforge inventory`
#[derive(Debug, Args)]
pub struct InventoryArgs {
    /// Ask this node's HTTP API instead of looking on the LAN by mDNS.
    #[arg(long, value_name = "HOST:PORT")]
    pub node: Option<String>,
    /// The cluster to list (needed when the LAN has several).
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
    /// Seconds to look for nodes on the LAN; also the HTTP timeout.
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    pub timeout: f64,
    /// Print dynamic-inventory JSON (what Ansible asks a script for).
    #[arg(long, visible_alias = "json", conflicts_with_all = ["host", "script"])]
    pub list: bool,
    /// Print the variables of one host (empty: --list has them all).
    #[arg(long, value_name = "HOST", conflicts_with = "script")]
    pub host: Option<String>,
    /// Write an inventory script to the cache and print its path, for
    /// `ansible -i "$(piforge inventory --script)"`.
    #[arg(long)]
    pub script: bool,
    /// Check the nodes' answers with the cluster key in this file (default: the key
    /// store's key of the cluster).
    #[arg(long, value_name = "F")]
    pub key_file: Option<PathBuf>,
}

impl InventoryArgs {
    /// Checks the arguments and turns them into a request.
    pub fn into_request(self) -> anyhow::Result<InventoryRequest> {
        if !(self.timeout.is_finite() && self.timeout > 0.0 && self.timeout <= 3600.0) {
            bail!(
                "--timeout {}: give seconds between 0 and 3600",
                self.timeout
            );
        }
        if let Some(n) = &self.node {
            let port = n.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
            if !matches!(port, Some(Ok(_))) {
                bail!("--node {n}: write it as HOST:PORT, e.g. --node 192.168.1.21:8080");
            }
        }
        let output = match (self.list, self.host, self.script) {
            (_, _, true) => InventoryOutput::Script,
            (_, Some(h), _) => InventoryOutput::Host(h),
            (true, _, _) => InventoryOutput::List,
            _ => InventoryOutput::Ini,
        };
        Ok(InventoryRequest {
            node: self.node,
            cluster: self.cluster,
            timeout: std::time::Duration::from_secs_f64(self.timeout),
            output,
            script_dir: Cache::default_root().join("inventory"),
            key_file: self.key_file,
        })
    }
}

/// `piforge flash`
#[derive(Debug, Args)]
pub struct FlashArgs {
    /// Devices (/dev/sdb, /dev/disk4, \\.\PhysicalDrive2) or image files to write; several
    /// are written at once, each with the next card of the batch.
    #[arg(value_name = "TARGET", required = true)]
    pub targets: Vec<PathBuf>,
    /// Batch directory (as given to `build --out`).
    #[arg(long, value_name = "DIR", default_value = "piforge-out")]
    pub out: PathBuf,
    /// Write card K of the batch (default: the next one not yet flashed).
    #[arg(long, value_name = "K", conflicts_with = "image")]
    pub card: Option<u32>,
    /// Write this image instead of a batch card (.img, .xz, .gz, .zst, .zip).
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    /// Write only the ranges of this bmap (default: FILE.bmap beside --image, if any).
    #[arg(long, value_name = "FILE", requires = "image")]
    pub bmap: Option<PathBuf>,
    /// Don't ask before overwriting a device.
    #[arg(short, long)]
    pub yes: bool,
    /// Don't read the written blocks back to compare them (a card is read back past the
    /// system's cache; an image file as its readers see it, after fsync).
    #[arg(long, conflicts_with = "verify_only")]
    pub no_verify: bool,
    /// Accept a disk that is not removable or larger than 256 GiB (never a system disk).
    #[arg(long)]
    pub force: bool,
    /// Write nothing: compare the targets with the image (needs --card K with a batch).
    #[arg(long)]
    pub verify_only: bool,
    /// Leave devices attached afterwards (default: eject where the system can).
    #[arg(long)]
    pub no_eject: bool,
    /// Seconds writing the end of a device may take before the card is called counterfeit.
    #[arg(long, value_name = "S", default_value_t = 60)]
    pub end_timeout: u64,
    /// Skip the fake-capacity check (sentinel blocks written across the device and read back
    /// before the image).
    #[arg(long)]
    pub no_capacity_check: bool,
}

/// `piforge devices`
#[derive(Debug, Args)]
pub struct DevicesArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Test knob: milliseconds to sleep after each 4 MiB written, so a test can interrupt a flash
/// mid-way. Not an option: nobody wants a slower flash.
pub const THROTTLE_ENV: &str = "PIFORGE_TEST_THROTTLE_MS";

/// Test knob: milliseconds to pause after every check and confirmation, before the first
/// write (announced on stderr as `test pause`), so a test can repoint a target's path there.
pub const PAUSE_ENV: &str = "PIFORGE_TEST_PAUSE_MS";

impl FlashArgs {
    /// Turns the arguments into a request.
    pub fn into_request(self, progress: bool) -> FlashRequest {
        let throttle = std::env::var(THROTTLE_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis);
        let pause = std::env::var(PAUSE_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis);
        FlashRequest {
            targets: self.targets,
            batch_dir: self.out,
            card: self.card,
            image: self.image,
            bmap: self.bmap,
            yes: self.yes,
            verify: !self.no_verify,
            force: self.force,
            verify_only: self.verify_only,
            eject: !self.no_eject,
            progress,
            write: WriteOptions {
                end_timeout: Duration::from_secs(self.end_timeout),
                throttle,
                hash: !self.no_verify,
                pause,
                capacity_check: !self.no_capacity_check,
            },
        }
    }
}

impl BuildArgs {
    /// Checks the arguments and turns them into a request.
    pub fn into_request(self, progress: bool) -> anyhow::Result<BuildRequest> {
        if self.password.is_some() {
            bail!(
                "refusing --password: a password on the command line is stored in shell history \
                 and visible in `ps`; put it in a file and use --password-file FILE (or - for stdin)"
            );
        }
        let (base, base_name) = match (&self.image, &self.from) {
            (_, Some(from)) => match Source::parse(from) {
                Source::Http(url) => (BaseRequest::Url(url.clone()), url),
                Source::File(p) => (BaseRequest::File(p.clone()), p.display().to_string()),
            },
            (image, None) => {
                let name = image.as_deref().unwrap_or(DEFAULT_IMAGE);
                let entry = Catalog::builtin().get(name)?.clone();
                (BaseRequest::Catalog(entry), name.to_string())
            }
        };
        let password = match (self.password_file, self.password_hash) {
            (Some(f), _) => PasswordSpec::File(f),
            (None, Some(h)) => PasswordSpec::Hash(h),
            (None, None) => PasswordSpec::None,
        };
        let wifi = match (self.wifi_ssid, self.wifi_psk_file, self.wifi_country) {
            (Some(ssid), Some(psk_file), Some(country)) => Some(WifiSpec {
                ssid,
                psk_file,
                country: country.to_uppercase(),
            }),
            _ => None,
        };
        let mut roles = vec![];
        for r in &self.role {
            roles.extend(parse_role(r)?);
        }
        Ok(BuildRequest {
            base,
            base_name,
            cards: self.cards,
            cluster: self.cluster,
            hostname_prefix: self.hostname_prefix,
            user: self.user,
            allow_root: self.allow_root,
            password,
            ssh_keys: self.ssh_key,
            wifi,
            overlays: self.overlay,
            roles,
            db_synchronous: self.db_synchronous,
            arch: self.arch,
            seed: self.seed,
            no_card: self.no_card,
            out: self.out,
            payload: self.payload,
            overlays_dir: self.overlays,
            cache_dir: self.cache_dir.unwrap_or_else(Cache::default_root),
            key_file: self.key_file,
            join: self.join,
            mdns: !self.no_mdns,
            timezone: self.timezone,
            keymap: self.keymap,
            locale: self.locale,
            mqtt: self.mqtt_url.map(|url| piforge::build::mqtt::MqttSpec {
                url,
                password_file: self.mqtt_password_file,
                ca_file: self.mqtt_ca_file,
                client_cert: self.mqtt_client_cert,
                client_key: self.mqtt_client_key,
            }),
            progress,
        })
    }
}

/// `K=NAME` or `K..L=NAME` (cards K to L, inclusive) into one `(card, NAME)` per card.
fn parse_role(r: &str) -> anyhow::Result<Vec<(u32, String)>> {
    let (k, name) = r
        .split_once('=')
        .with_context(|| format!("--role {r}: write it as K=NAME, e.g. --role 1=lb"))?;
    let card = |k: &str| -> anyhow::Result<u32> {
        k.trim()
            .parse()
            .with_context(|| format!("--role {r}: {k:?} is not a card number"))
    };
    let (first, last) = match k.split_once("..") {
        Some((a, b)) => (card(a)?, card(b)?),
        None => (card(k)?, card(k)?),
    };
    if first > last {
        bail!("--role {r}: {first}..{last} is empty; write the lower card first, e.g. 2..4");
    }
    Ok((first..=last).map(|k| (k, name.to_string())).collect())
}

impl ExportArgs {
    /// Turns the arguments into a request.
    pub fn into_request(self, progress: bool) -> ExportRequest {
        ExportRequest {
            batch_dir: self.out,
            card: self.card,
            output: self.output,
            progress,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent_and_help_fits_80_columns() {
        Cli::command().debug_assert();
        for sub in [
            "images",
            "build",
            "export",
            "inspect",
            "inventory",
            "flash",
            "devices",
            "completions",
            "manpages",
            "status",
            "known-hosts",
        ] {
            // What `piforge SUB --help` prints, piped or not.
            let help = Cli::try_parse_from(["piforge", sub, "--help"])
                .unwrap_err()
                .to_string();
            assert!(help.contains("Usage: piforge"), "{help}");
            for line in help.lines() {
                assert!(line.chars().count() <= 80, "{sub}: {line:?}");
            }
        }
    }

    #[test]
    fn the_default_image_is_in_the_catalog() {
        assert_eq!(
            Catalog::builtin().get(DEFAULT_IMAGE).unwrap().name,
            DEFAULT_IMAGE
        );
    }

    #[test]
    fn password_in_clear_is_refused() {
        let cli = Cli::try_parse_from(["piforge", "build", "--password", "hunter2"]).unwrap();
        let Command::Build(b) = cli.command else {
            panic!()
        };
        let e = b.into_request(false).unwrap_err().to_string();
        assert!(
            e.contains("--password-file") && !e.contains("hunter2"),
            "{e}"
        );
    }

    #[test]
    fn inventory_args() {
        let req = |args: &[&str]| {
            let mut v = vec!["piforge", "inventory"];
            v.extend_from_slice(args);
            let Command::Inventory(a) = Cli::try_parse_from(v).unwrap().command else {
                panic!()
            };
            a.into_request()
        };
        assert_eq!(req(&[]).unwrap().output, InventoryOutput::Ini);
        assert_eq!(req(&["--json"]).unwrap().output, InventoryOutput::List);
        assert_eq!(
            req(&["--host", "pi-1"]).unwrap().output,
            InventoryOutput::Host("pi-1".into())
        );
        let r = req(&["--script", "--node", "10.0.0.1:8080", "--timeout", "0.5"]).unwrap();
        assert_eq!(r.output, InventoryOutput::Script);
        assert_eq!(r.timeout, std::time::Duration::from_millis(500));
        let e = req(&["--node", "10.0.0.1"]).unwrap_err().to_string();
        assert!(e.contains("HOST:PORT"), "{e}");
        assert!(req(&["--timeout=0"]).is_err());
        assert!(req(&["--timeout=-1"]).is_err());
        assert!(Cli::try_parse_from(["piforge", "inventory", "--list", "--script"]).is_err());
    }

    #[test]
    fn roles_parse() {
        let cli = Cli::try_parse_from([
            "piforge", "build", "--from", "x.img", "--cards", "2", "--role", "1=lb",
        ])
        .unwrap();
        let Command::Build(b) = cli.command else {
            panic!()
        };
        assert_eq!(
            b.into_request(false).unwrap().roles,
            [(1, "lb".to_string())]
        );
        let role = |r: &str| parse_role(r).map_err(|e| e.to_string());
        assert_eq!(
            role("2..4=web,db").unwrap(),
            [2, 3, 4].map(|k| (k, "web,db".to_string()))
        );
        assert_eq!(role("3..3=db").unwrap(), [(3, "db".to_string())]);
        assert!(role("4..2=db").unwrap_err().contains("lower card first"));
        assert!(role("2..x=db").unwrap_err().contains("not a card number"));
        assert!(role("2...4=db").unwrap_err().contains("not a card number"));
        let cli =
            Cli::try_parse_from(["piforge", "build", "--from", "x.img", "--role", "lb"]).unwrap();
        let Command::Build(b) = cli.command else {
            panic!()
        };
        assert!(
            b.into_request(false)
                .unwrap_err()
                .to_string()
                .contains("K=NAME")
        );
    }
}
