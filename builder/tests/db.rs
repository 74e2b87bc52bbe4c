//! PostgreSQL failover through the db and lb overlays, with the real engines on loopback.
//!
//! Three fake db members on `127.0.2.1-3` and an lb on `127.0.2.10`, addresses of the loopback
//! device of a network namespace the test creates (so nothing collides with the machine's own
//! services or a parallel run, and a connection between two members comes from a member's
//! address, as on a LAN, which pg_hba's replication rules need): the db overlay's templates
//! (`etcd.env`, `patroni.yml`) and the lb overlay's `postgres.cfg` are rendered by the node's
//! real renderer (`piforge-node render --once`) from the member list each node would see, and
//! the engines start from those files: etcd and Patroni through the overlay's own start
//! scripts (`piforge-etcd`, `piforge-patroni`, with the rendered etcd.env as their
//! environment, as systemd's EnvironmentFile gives it), PostgreSQL by Patroni, HAProxy with the
//! lb overlay's main config and the rendered frontends. The only changes to the rendered files:
//! paths under `/var/` move into the test's directory, HAProxy binds a test address instead of
//! `:5000`/`:5001`/`:8404`, and HAProxy keeps its privileges and logs nowhere.
//!
//! Synchronous mode (tag `db-synchronous=on`): rows are written through HAProxy's primary
//! port without pause, the primary's patroni and postgres are SIGKILLed, and the test asserts
//! that a replica is promoted, every connection to HAProxy's primary port leads to it and the
//! read port to the remaining replica, writes resume within [`FAILOVER_BOUND`] (it prints the
//! failover time), and no acknowledged row is lost. Were HAProxy to keep sending writes to the
//! dead primary (or to a replica), writes would not resume or a connection would reach another
//! server, and the test fails. Every wait is bounded and every process this test starts (and
//! the postmasters Patroni starts) is killed on any exit, panics included.
//!
//! Needs root (CI runs as root) for the namespace; without it the test says SKIPPED and returns.
//! PostgreSQL refuses to run as root, so etcd and Patroni run as the `postgres` user
//! (`setpriv`). Needs the Debian packages postgresql, patroni, etcd-server and haproxy; a missing
//! one fails the test with the package to install.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::render::node_render;
use rand::Rng;

/// Longest acceptable time from the kill to the first acknowledged write on the new primary
/// (Patroni's leader key TTL is 20 s, its loop 5 s, HAProxy checks every second).
const FAILOVER_BOUND: Duration = Duration::from_secs(60);
/// Longest wait for the cluster to form (initdb, a leader, two streaming replicas).
const FORM_BOUND: Duration = Duration::from_secs(90);

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../overlays")
}

/// The processes of the test; everything is killed when it drops.
struct Engines {
    /// The network namespace everything runs in.
    ns: String,
    dir: PathBuf,
    children: Vec<(String, Child)>,
    /// PostgreSQL data dirs: their postmasters are Patroni's children, detached from it.
    data_dirs: Vec<PathBuf>,
}

fn kill9(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Pids whose parent is `pid` (from /proc).
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = vec![];
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        if ppid == Some(pid)
            && let Some(child) = e.file_name().to_str().and_then(|n| n.parse().ok())
        {
            out.push(child);
        }
    }
    out
}

/// The postmaster pid of a data dir, if one is running.
fn postmaster(data_dir: &Path) -> Option<u32> {
    let text = fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// SIGKILLs a postmaster and its backends.
fn kill_postgres(data_dir: &Path) {
    if let Some(pm) = postmaster(data_dir) {
        let kids = children_of(pm);
        kill9(pm);
        for k in kids {
            kill9(k);
        }
    }
}

impl Engines {
    fn kill_child(&mut self, name: &str) {
        for (n, c) in &mut self.children {
            if n == name {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    fn log_tails(&self) -> String {
        let mut out = String::new();
        for (name, _) in &self.children {
            let text = fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let lines: Vec<&str> = lines
                .into_iter()
                .filter(|l| !l.starts_with(' ') && !l.starts_with("Traceback"))
                .collect();
            let tail = &lines[lines.len().saturating_sub(15)..];
            out += &format!("--- {name}.log\n{}\n", tail.join("\n"));
        }
        out
    }
}

impl Drop for Engines {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails());
        }
        for (_, c) in &mut self.children {
            let _ = c.kill();
        }
        for d in &self.data_dirs {
            kill_postgres(d);
        }
        for (_, c) in &mut self.children {
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// `program` in the namespace `ns`, as `user` (uid, gid) when given.
fn in_ns(ns: &str, user: Option<(u32, u32)>, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]);
    if let Some((u, g)) = user {
        cmd.arg("setpriv")
            .arg(format!("--reuid={u}"))
            .arg(format!("--regid={g}"))
            .arg("--clear-groups");
    }
    cmd.arg(program);
    cmd
}

/// The `postgres` user's uid and gid (PostgreSQL refuses to run as root).
fn postgres_user() -> (u32, u32) {
    let id = |args: &[&str]| -> u32 {
        let out = Command::new("id").args(args).output().expect("running id");
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    (id(&["-u", "postgres"]), id(&["-g", "postgres"]))
}

fn chown_tree(p: &Path, (u, g): (u32, u32)) {
    std::os::unix::fs::chown(p, Some(u), Some(g)).unwrap();
    if p.is_dir() {
        for e in fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path(), (u, g));
        }
    }
}

/// `psql` as the superuser against `host:port`, killed after `timeout`. Ok(stdout) when psql
/// succeeded (for a write: the commit was acknowledged).
fn psql(
    ns: &str,
    (host, port): (&str, u16),
    pw: &str,
    sql: &str,
    timeout: Duration,
) -> Result<String, String> {
    let mut child = in_ns(ns, None, "psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            "postgres",
        ])
        .args([
            "-d",
            "postgres",
            "-h",
            host,
            "-p",
            &port.to_string(),
            "-c",
            sql,
        ])
        .env("PGPASSWORD", pw)
        .env("PGCONNECT_TIMEOUT", "2")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running psql (postgresql-client)");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err("timed out".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Polls `f` every 200 ms until it returns Ok, or panics with `what` and the last Err after
/// `bound`.
fn wait_for<T>(bound: Duration, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if start.elapsed() > bound => {
                panic!("timed out after {bound:?}: {what} (last: {e})")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// A member as `/api/members` lists it; `me` is the answering node (no `last_seen`).
fn member(name: &str, ip: &str, me: bool, tags: &[(&str, &str)]) -> serde_json::Value {
    let tags: serde_json::Map<String, serde_json::Value> = tags
        .iter()
        .map(|(k, v)| (k.to_string(), (*v).into()))
        .collect();
    serde_json::json!({
        "name": name, "addr": format!("{ip}:7946"), "ip": ip, "port": 7946, "generation": 1,
        "state": "alive", "phi": 0.1, "threshold": 8.0, "tags": tags, "uptime": 5,
        "last_seen": if me { serde_json::Value::Null } else { 0.2.into() },
    })
}

/// `KEY=VALUE` lines of an environment file, as systemd's EnvironmentFile reads this one.
fn env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=VALUE");
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn db_primary_fails_over_through_haproxy_without_losing_acknowledged_rows() {
    let haproxy = common::require_tool("haproxy", "haproxy");
    common::require_tool("etcd", "etcd-server");
    common::require_tool("patroni", "patroni");
    common::require_tool("psql", "postgresql-client");
    assert!(
        fs::read_dir("/usr/lib/postgresql").is_ok_and(|mut d| d.next().is_some()),
        "no /usr/lib/postgresql/*/bin: install the Debian package `postgresql`"
    );
    let mut rng = rand::rng();
    let ns = format!("piforge-db-{}", hex::encode(rng.random::<[u8; 4]>()));
    let netns = |args: &[&str]| {
        Command::new("ip")
            .args(["-n", &ns])
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .is_ok_and(|s| s.success())
    {
        eprintln!("SKIPPED db failover test: cannot create a network namespace (needs root)");
        return;
    }
    let ip = |i: usize| format!("127.0.2.{i}");
    let user = Some(postgres_user());
    let pw = |rng: &mut rand::rngs::ThreadRng| hex::encode(rng.random::<[u8; 32]>());
    let (superuser_pw, replication_pw, rest_pw) = (pw(&mut rng), pw(&mut rng), pw(&mut rng));

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let mut engines = Engines {
        ns: ns.clone(),
        dir: dir.clone(),
        children: vec![],
        data_dirs: vec![],
    };
    let mut up = netns(&["link", "set", "lo", "up"]);
    for i in [1, 2, 3, 10] {
        up &= netns(&["addr", "add", &format!("{}/32", ip(i)), "dev", "lo"]);
    }
    assert!(up, "setting up the loopback addresses in {ns}");
    let names = ["db-1", "db-2", "db-3"];
    let db_tags = [
        ("role", "db"),
        ("postgres-port", "5432"),
        ("db-etcd", "3"),
        ("db-synchronous", "on"),
    ];
    // What node `me` lists: the three db members and the lb.
    let listing = |me: Option<usize>| {
        let mut ms: Vec<_> = (0..3)
            .map(|i| member(names[i], &ip(i + 1), me == Some(i), &db_tags))
            .collect();
        ms.push(member("lb-1", &ip(10), me.is_none(), &[("role", "lb")]));
        serde_json::Value::from(ms)
    };

    // Render each db node's files with the real renderer, relocated under its own dir.
    let db_templates = shipped().join("db/templates");
    let mut etcd_envs = vec![];
    let mut patroni_confs = vec![];
    for (i, name) in names.iter().enumerate() {
        let node = dir.join(name);
        for d in [
            "var/lib/etcd",
            "var/lib/postgresql",
            "var/run/postgresql",
            "etc",
        ] {
            fs::create_dir_all(node.join(d)).unwrap();
        }
        let relocate = |text: &str| text.replace("\"/var/", &format!("\"{}/var/", node.display()));
        let etcd = node_render(
            &db_templates.join("etcd.env.hbs"),
            listing(Some(i)),
            &node.join("etc/etcd.env"),
        );
        assert!(etcd.contains(&format!("ETCD_NAME={}\n", name)), "{etcd}");
        let etcd = etcd.replace("=/var/", &format!("={}/var/", node.display()));
        etcd_envs.push(env_file(&etcd));
        let patroni = node_render(
            &db_templates.join("patroni.yml.hbs"),
            listing(Some(i)),
            &node.join("etc/patroni.yml"),
        );
        assert!(
            patroni.contains(&format!("listen: \"{}:5432\"", ip(i + 1)))
                && patroni.contains("synchronous_mode: true")
                && patroni.contains(&format!("- \"{}:2379\"", ip(3))),
            "{patroni}"
        );
        let conf = node.join("etc/patroni.yml");
        fs::write(&conf, relocate(&patroni)).unwrap();
        patroni_confs.push(conf);
        engines
            .data_dirs
            .push(node.join("var/lib/postgresql/piforge"));
    }
    // Everything below the test dir belongs to the engines' user.
    let mut mode = fs::metadata(&dir).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o755);
    fs::set_permissions(&dir, mode).unwrap();
    chown_tree(&dir, postgres_user());

    let spawn = |engines: &mut Engines, name: &str, cmd: &mut Command| {
        let log = fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        engines.children.push((name.to_string(), child));
    };
    let bin = shipped().join("db/files/usr/local/bin");
    let path = std::env::var("PATH").unwrap_or_default();
    for (i, env) in etcd_envs.iter().enumerate() {
        let mut cmd = in_ns(&ns, user, bin.join("piforge-etcd"));
        cmd.env_clear().env("PATH", &path).envs(env.clone());
        spawn(&mut engines, &format!("etcd-{}", i + 1), &mut cmd);
    }
    for i in 0..3 {
        let mut cmd = in_ns(&ns, user, bin.join("piforge-patroni"));
        cmd.env_clear()
            .env("PATH", &path)
            .env("HOME", dir.join(names[i]))
            .env("LANG", "C.UTF-8")
            .env("PIFORGE_PATRONI_CONF", &patroni_confs[i])
            .env("PATRONI_SUPERUSER_PASSWORD", &superuser_pw)
            .env("PATRONI_REPLICATION_PASSWORD", &replication_pw)
            .env("PATRONI_RESTAPI_USERNAME", "piforge")
            .env("PATRONI_RESTAPI_PASSWORD", &rest_pw);
        spawn(&mut engines, &format!("patroni-{}", i + 1), &mut cmd);
    }

    // HAProxy: the lb overlay's main config, its rendered web backend (no web member) and
    // PostgreSQL frontends.
    let lb = ip(10);
    let conf = dir.join("haproxy");
    fs::create_dir_all(&conf).unwrap();
    let main = fs::read_to_string(shipped().join("lb/files/etc/haproxy/piforge/00-main.cfg"))
        .unwrap()
        .replace("bind :80", &format!("bind {lb}:80"))
        .replace("bind :8404", &format!("bind {lb}:8404"))
        .lines()
        .filter(|l| !l.trim_start().starts_with("user ") && !l.trim_start().starts_with("group "))
        .filter(|l| !l.trim_start().starts_with("log /dev/log"))
        .collect::<Vec<_>>()
        .join("\n");
    fs::write(conf.join("00-main.cfg"), main + "\n").unwrap();
    node_render(
        &shipped().join("lb/templates/backend.cfg.hbs"),
        listing(None),
        &conf.join("50-backend.cfg"),
    );
    let pg = node_render(
        &shipped().join("lb/templates/postgres.cfg.hbs"),
        listing(None),
        &conf.join("60-postgres.cfg"),
    );
    for i in 1..=3 {
        let server = format!("server db-{i} {}:5432 check port 8008", ip(i));
        assert_eq!(pg.matches(&server).count(), 2, "{pg}");
    }
    let pg = pg
        .replace("bind :5000", &format!("bind {lb}:5000"))
        .replace("bind :5001", &format!("bind {lb}:5001"));
    fs::write(conf.join("60-postgres.cfg"), pg).unwrap();
    let hap = Command::new(&haproxy)
        .arg("-c")
        .arg("-f")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        hap.status.success(),
        "{}",
        String::from_utf8_lossy(&hap.stderr)
    );
    let mut cmd = in_ns(&ns, None, &haproxy);
    cmd.arg("-db").arg("-f").arg(&conf);
    spawn(&mut engines, "haproxy", &mut cmd);

    // The cluster forms: a primary behind :5000 with two streaming replicas, one synchronous.
    let formed = Instant::now();
    let q = |host: &str, port: u16, sql: &str| {
        psql(
            &ns,
            (host, port),
            &superuser_pw,
            sql,
            Duration::from_secs(5),
        )
    };
    let primary_ip = wait_for(FORM_BOUND, "a primary with 2 streaming replicas", || {
        let r = q(
            &lb,
            5000,
            "select inet_server_addr()::text || ' ' || pg_is_in_recovery()::text || ' ' || \
             (select count(*) from pg_stat_replication where state = 'streaming') || ' ' || \
             (select count(*) from pg_stat_replication where sync_state = 'sync')",
        )?;
        let f: Vec<&str> = r.split_whitespace().collect();
        (f.len() == 4 && f[1] == "false" && f[2] == "2" && f[3] == "1")
            .then(|| f[0].trim_end_matches("/32").to_string())
            .ok_or(r)
    });
    println!(
        "cluster formed in {:.1} s, primary {primary_ip}",
        formed.elapsed().as_secs_f64()
    );
    let old = (1..=3)
        .find(|i| ip(*i) == primary_ip)
        .expect("the primary is a db member");
    q(&lb, 5000, "create table t (id bigint primary key)").unwrap();

    // Write without pause through HAProxy; record what was acknowledged, and when.
    let acked: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        let (ns, lb, pw) = (ns.clone(), lb.clone(), superuser_pw.clone());
        std::thread::spawn(move || {
            let mut id = 0u64;
            while !stop.load(Ordering::SeqCst) {
                id += 1;
                let sql = format!("insert into t values ({id})");
                if psql(&ns, (&lb, 5000), &pw, &sql, Duration::from_secs(5)).is_ok() {
                    acked.lock().unwrap().push((id, Instant::now()));
                } else {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        })
    };
    wait_for(
        Duration::from_secs(30),
        "20 rows written before the kill",
        || {
            let n = acked.lock().unwrap().len();
            (n >= 20).then_some(()).ok_or(format!("{n} rows"))
        },
    );

    // SIGKILL the primary's patroni and postgres.
    let killed = Instant::now();
    engines.kill_child(&format!("patroni-{old}"));
    kill_postgres(&engines.data_dirs[old - 1]);
    let before = acked.lock().unwrap().len();

    let resumed = wait_for(FAILOVER_BOUND, "writes resume after the kill", || {
        acked
            .lock()
            .unwrap()
            .iter()
            .find(|(_, t)| *t > killed)
            .map(|(_, t)| *t)
            .ok_or_else(|| "no write acknowledged since the kill".to_string())
    });
    let failover = resumed - killed;
    println!(
        "failover: {:.1} s from SIGKILL of the primary to the first acknowledged write \
         ({before} rows before)",
        failover.as_secs_f64()
    );
    wait_for(
        Duration::from_secs(30),
        "20 more rows on the new primary",
        || {
            let n = acked
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, t)| *t > killed)
                .count();
            (n >= 20).then_some(()).ok_or(format!("{n} rows"))
        },
    );
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();

    // Every connection to HAProxy's primary port leads to the promoted replica, none to the
    // dead primary or to a replica.
    let whoami = "select inet_server_addr()::text || ' ' || pg_is_in_recovery()::text";
    let mut servers = BTreeSet::new();
    for _ in 0..10 {
        servers.insert(q(&lb, 5000, whoami).expect("a connection through :5000 failed"));
    }
    assert_eq!(
        servers.len(),
        1,
        "HAProxy's :5000 leads to several servers: {servers:?}"
    );
    let now = servers.pop_first().unwrap();
    let (new_ip, recovery) = now.split_once(' ').unwrap();
    let new_ip = new_ip.trim_end_matches("/32").to_string();
    assert_ne!(
        new_ip, primary_ip,
        "HAProxy still routes to the dead primary"
    );
    assert!((1..=3).any(|i| ip(i) == new_ip), "{new_ip}");
    assert_eq!(
        recovery, "false",
        "the server behind :5000 is not a primary"
    );
    // The read port leads to the remaining replica once it follows the new primary.
    let replica = wait_for(Duration::from_secs(30), "a replica behind :5001", || {
        let r = q(&lb, 5001, whoami)?;
        r.ends_with(" true").then_some(r.clone()).ok_or(r)
    });
    assert!(
        !replica.starts_with(&primary_ip) && !replica.starts_with(&new_ip),
        "{replica}"
    );
    assert!(
        postmaster(&engines.data_dirs[old - 1]).is_none(),
        "old primary still running"
    );

    // Synchronous mode: nothing acknowledged is lost.
    let rows: BTreeSet<u64> = q(&lb, 5000, "select id from t")
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let acked = acked.lock().unwrap();
    let lost: Vec<u64> = acked
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !rows.contains(id))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged rows lost in the failover: {lost:?}"
    );
    println!(
        "{} acknowledged rows, all on the new primary {new_ip}",
        acked.len()
    );
    // HAProxy's checks (every second, on both ports) leave Patroni's log clean.
    for i in (1..=3).filter(|i| *i != old) {
        let log = fs::read_to_string(dir.join(format!("patroni-{i}.log"))).unwrap();
        assert!(!log.contains("Traceback"), "patroni-{i}.log:\n{log}");
    }
}

/// `piforge-etcd` with the environment systemd would give it from `etcd.env` rendered for
/// `db-1` over `listing`; etcd replaced by `env`, so the test sees what etcd would get.
fn etcd_start(dir: &Path, listing: serde_json::Value) -> (bool, String) {
    let env_path = dir.join("etcd.env");
    let _ = fs::remove_file(&env_path);
    let text = node_render(
        &shipped().join("db/templates/etcd.env.hbs"),
        listing,
        &env_path,
    );
    let out = Command::new(shipped().join("db/files/usr/local/bin/piforge-etcd"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PIFORGE_ETCD_BIN", "/usr/bin/env")
        .envs(env_file(&text))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn etcd_bootstraps_only_once_every_initial_member_is_known() {
    let d = tempfile::tempdir().unwrap();
    let tags = [("role", "db"), ("postgres-port", "5432"), ("db-etcd", "3")];
    let m = |i: u8, me: bool| member(&format!("db-{i}"), &format!("10.0.0.{i}"), me, &tags);
    // Before the first render, etcd.service's own ETCD_NAME is no reason to start.
    let out = Command::new(shipped().join("db/files/usr/local/bin/piforge-etcd"))
        .env_clear()
        .env("ETCD_NAME", "pi-02")
        .env("PIFORGE_ETCD_BIN", "/usr/bin/env")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not rendered yet"),
        "{err}"
    );
    // Two of three initial members known: no bootstrap (systemd retries).
    let (ok, out) = etcd_start(d.path(), vec![m(1, true), m(3, false)].into());
    assert!(!ok, "{out}");
    assert!(
        out.contains("waiting for the initial etcd members (2 of 3 known)"),
        "{out}"
    );
    // All three: etcd starts with exactly them, and the helper variables are gone.
    let (ok, out) = etcd_start(d.path(), vec![m(1, true), m(2, false), m(3, false)].into());
    assert!(ok, "{out}");
    let want = "ETCD_INITIAL_CLUSTER=db-1=http://10.0.0.1:2380,db-2=http://10.0.0.2:2380,\
                db-3=http://10.0.0.3:2380\n";
    assert!(out.contains(want), "{out}");
    assert!(out.contains("ETCD_NAME=db-1\n") && out.contains("ETCD_INITIAL_CLUSTER_STATE=new"));
    assert!(!out.contains("PIFORGE_"), "{out}");
    // A db member added later (no db-etcd tag) runs no etcd, and says so.
    let late = member(
        "db-4",
        "10.0.0.4",
        true,
        &[("role", "db"), ("postgres-port", "5432")],
    );
    let (ok, out) = etcd_start(d.path(), vec![m(1, false), late].into());
    assert!(ok && out.contains("db-4 is not an etcd member"), "{out}");
    assert!(!out.contains("ETCD_INITIAL_CLUSTER="), "{out}");
}

#[test]
fn hostile_member_names_and_tags_stay_values_in_the_db_configs() {
    let d = tempfile::tempdir().unwrap();
    let evil = "db-1\"\n  listen: 0.0.0.0:5432\nETCD_DATA_DIR=/ $(reboot)";
    let tags = [
        ("role", "db"),
        ("postgres-port", "5432"),
        ("db-etcd", "2"),
        ("db-synchronous", "on\nsynchronous_mode: false"),
    ];
    let listing = serde_json::Value::from(vec![
        member(evil, "10.0.0.1", true, &tags),
        member("db-2", "10.0.0.2", false, &tags),
    ]);
    // Patroni reads its YAML with PyYAML: the name reads back exactly, nothing is added.
    let yml = node_render(
        &shipped().join("db/templates/patroni.yml.hbs"),
        listing.clone(),
        &d.path().join("patroni.yml"),
    );
    let script = "import json, sys, yaml; c = yaml.safe_load(sys.stdin); \
                  print(json.dumps([c['name'], c['restapi']['listen'], c['postgresql']['listen'], \
                  c['bootstrap']['dcs']['synchronous_mode'], sorted(c)]))";
    let mut py = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with yaml (a dependency of patroni)");
    std::io::Write::write_all(&mut py.stdin.take().unwrap(), yml.as_bytes()).unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{yml}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys = [
        "bootstrap",
        "etcd3",
        "name",
        "namespace",
        "postgresql",
        "restapi",
        "scope",
        "watchdog",
    ];
    assert_eq!(
        got,
        serde_json::json!([evil, "10.0.0.1:8008", "10.0.0.1:5432", false, keys]),
        "{yml}"
    );
    // etcd.env: the name stays one value on its lines; no variable is added.
    let env = node_render(
        &shipped().join("db/templates/etcd.env.hbs"),
        listing,
        &d.path().join("etcd.env"),
    );
    let vars: Vec<String> = env_file(&env).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        vars,
        [
            "ETCD_NAME",
            "ETCD_LISTEN_PEER_URLS",
            "ETCD_LISTEN_CLIENT_URLS",
            "ETCD_INITIAL_ADVERTISE_PEER_URLS",
            "ETCD_ADVERTISE_CLIENT_URLS",
            "PIFORGE_ETCD_INITIAL_SIZE",
            "ETCD_DATA_DIR",
            "ETCD_INITIAL_CLUSTER_TOKEN",
            "ETCD_INITIAL_CLUSTER_STATE",
            "PIFORGE_ETCD_INITIAL_CLUSTER",
        ],
        "{env}"
    );
    assert!(
        env.contains("ETCD_DATA_DIR=/var/lib/etcd/piforge\n"),
        "{env}"
    );
}
