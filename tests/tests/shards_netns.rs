//! Three real daemons, each in a network namespace of its own with its own
//! address (`ip netns`, a veth pair each), sharing one PostgreSQL log and
//! configured only through the environment: shard `i/3`, the peer URL
//! `http://10.N.{shard}.2:8080`, the log, the plugin. A client that follows
//! the 421's `Location` reads every grain from any of them; a daemon killed
//! and started again takes its shard back.
//!
//! Needs root and iproute2; elsewhere it prints `SKIPPED:` (and fails
//! instead under `CI` or `REPLICA_REQUIRE_POSTGRES=1`, as CI runs as root).

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use replica_e2e::daemon::{self, Daemon};
use replica_e2e::http;
use replica_e2e::log_writer::LogWriter;
use replica_e2e::orlando::{self, CounterState};
use replica_e2e::pg::postgres_required;
use replica_e2e::pg_server::PgServer;
use replica_host::test_seam::shard_of;

const SHARDS: u32 = 3;
const GRAINS: u32 = 30;

/// `ip ARGS…`, which must succeed.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One namespace per shard, each joined to the root namespace by a veth
/// pair: `10.N.i.1/24` on the root side, `10.N.i.2/24` inside. Removed on
/// drop (deleting a namespace deletes its end of the pair, and the pair).
struct Namespaces {
    names: Vec<String>,
    net: u8,
}

impl Namespaces {
    fn new(count: u32) -> Self {
        // Distinct names and subnets per test process.
        let tag = std::process::id() % 10_000;
        let net = 100 + (std::process::id() % 100) as u8;
        let mut names = Vec::new();
        for i in 0..count {
            let ns = format!("rh{tag}-{i}");
            let (outer, inner) = (format!("rh{tag}o{i}"), format!("rh{tag}i{i}"));
            ip(&["netns", "add", &ns]);
            names.push(ns.clone());
            ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ]);
            ip(&["link", "set", &inner, "netns", &ns]);
            ip(&["addr", "add", &format!("10.{net}.{i}.1/24"), "dev", &outer]);
            ip(&["link", "set", &outer, "up"]);
            let in_ns = |args: &[&str]| {
                let mut all = vec!["netns", "exec", ns.as_str(), "ip"];
                all.extend_from_slice(args);
                ip(&all);
            };
            in_ns(&["addr", "add", &format!("10.{net}.{i}.2/24"), "dev", &inner]);
            in_ns(&["link", "set", &inner, "up"]);
            in_ns(&["link", "set", "lo", "up"]);
        }
        Self { names, net }
    }

    fn daemon_addr(&self, shard: u32) -> SocketAddr {
        format!("10.{}.{shard}.2:8080", self.net).parse().unwrap()
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Starts the daemon of `shard` inside its namespace, every setting from
/// the environment (the config file is empty).
fn start(namespaces: &Namespaces, shard: u32, server: &PgServer, dir: &std::path::Path) -> Daemon {
    let net = namespaces.net;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &namespaces.names[shard as usize]])
        .arg(replica_e2e::host_bin())
        .arg("run")
        .env("REPLICA_CONFIG", dir.join("empty.toml"))
        .env("REPLICA_CLUSTER_ID", "netns")
        .env(
            "REPLICA_LOG__URL",
            format!(
                "postgres://postgres@10.{net}.{shard}.1:{}/postgres?sslmode=require",
                server.port
            ),
        )
        .env("PGPASSWORD", &server.password)
        .env(
            "REPLICA_HTTP__LISTEN",
            namespaces.daemon_addr(shard).to_string(),
        )
        .env("REPLICA_HTTP__ALLOW_UNAUTHENTICATED", "true")
        .env("REPLICA_CONSUMER__SHARD", format!("{shard}/{SHARDS}"))
        .env(
            "REPLICA_CONSUMER__PEER_URL",
            format!("http://10.{net}.{{shard}}.2:8080"),
        )
        .env("REPLICA_CONSUMER__POLL_INTERVAL_MS", "50")
        .env("REPLICA_CONSUMER__MAX_BACKOFF_MS", "400")
        .env("REPLICA_PLUGIN__0__GRAIN_TYPE", "Counter")
        .env("REPLICA_PLUGIN__0__PATH", "counter-plugin.wasm");
    Daemon::spawn(cmd)
}

/// `GET path` at `addr`, following a 421's `Location` (once).
fn read_following(addr: SocketAddr, path: &str) -> Result<http::Response, String> {
    let first = http::get(addr, path).map_err(|e| format!("{addr}{path}: {e}"))?;
    if first.status != 421 {
        return Ok(first);
    }
    let location = first
        .header("location")
        .ok_or_else(|| format!("421 without Location: {}", first.body))?;
    let rest = location
        .strip_prefix("http://")
        .ok_or_else(|| format!("Location {location} is not http://"))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let owner: SocketAddr = host.parse().map_err(|e| format!("{location}: {e}"))?;
    http::get(owner, path).map_err(|e| format!("{location}: {e}"))
}

/// Polls until every grain reads `expect(key)` through the daemon at `via`.
fn every_grain_through(via: SocketAddr, expect: impl Fn(u32) -> i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..GRAINS {
        let path = daemon::replica_path("Counter", &format!("c-{i}"));
        loop {
            let outcome = read_following(via, &path);
            match &outcome {
                Ok(r) if r.status == 200 && r.json()["state"]["count"] == expect(i) => break,
                _ if Instant::now() > deadline => {
                    panic!(
                        "c-{i} through {via}: {:?}",
                        outcome.map(|r| (r.status, r.body))
                    )
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let has_ip = Command::new("ip").arg("-V").output().is_ok();
    if root && has_ip {
        return true;
    }
    assert!(
        !postgres_required(),
        "three daemons in network namespaces need root and iproute2"
    );
    println!("SKIPPED: three daemons in network namespaces: needs root and iproute2");
    false
}

#[test]
fn three_sharded_daemons_in_network_namespaces_route_reads_to_the_owner() {
    if !can_run() {
        return;
    }
    let Some(server) = PgServer::start_on("three_sharded_daemons", "*", &["10.0.0.0/8"]) else {
        return;
    };
    let namespaces = Namespaces::new(SHARDS);
    let writer = LogWriter::open(&server.url_with_password("localhost", "sslmode=require"));
    for i in 0..GRAINS {
        writer.full(
            "Counter",
            &format!("c-{i}"),
            1,
            orlando::bincode(&CounterState {
                count: i64::from(i),
            }),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("empty.toml"),
        "# every setting from the environment\n",
    )
    .unwrap();
    daemon::copy_plugin(dir.path(), "counter-plugin");

    let mut daemons: Vec<Option<Daemon>> = (0..SHARDS)
        .map(|shard| Some(start(&namespaces, shard, &server, dir.path())))
        .collect();
    for (shard, d) in daemons.iter().enumerate() {
        let d = d.as_ref().unwrap();
        assert_eq!(d.addr, namespaces.daemon_addr(shard as u32));
        d.wait_for("/readyz", Duration::from_secs(60), |r| r.status == 200);
        let shards = d.get("/v1/shards").json();
        assert_eq!(shards["shard"], shard);
        assert_eq!(shards["count"], SHARDS);
    }
    // Every shard owns some grains, so every daemon answers some reads with
    // a 421 that must be followed.
    for shard in 0..SHARDS {
        assert!((0..GRAINS).any(|i| shard_of("Counter", &format!("c-{i}"), SHARDS) == shard));
    }
    for shard in 0..SHARDS {
        every_grain_through(namespaces.daemon_addr(shard), i64::from);
    }
    // A read of another shard's grain from daemon 0 is a 421 to its owner.
    let theirs = (0..GRAINS)
        .find(|i| shard_of("Counter", &format!("c-{i}"), SHARDS) == 1)
        .unwrap();
    let path = daemon::replica_path("Counter", &format!("c-{theirs}"));
    let r = http::get(namespaces.daemon_addr(0), &path).unwrap();
    assert_eq!(r.status, 421);
    assert_eq!(
        r.header("location"),
        Some(format!("http://{}{path}", namespaces.daemon_addr(1)).as_str())
    );

    // Kill shard 1's daemon: its grains cannot be read while it is away.
    drop(daemons[1].take());
    assert!(read_following(namespaces.daemon_addr(0), &path).is_err());
    // The primary moves on meanwhile.
    for i in 0..GRAINS {
        writer.full(
            "Counter",
            &format!("c-{i}"),
            2,
            orlando::bincode(&CounterState {
                count: i64::from(i) + 100,
            }),
        );
    }
    // Started again with the same environment, it takes its shard back.
    daemons[1] = Some(start(&namespaces, 1, &server, dir.path()));
    for shard in 0..SHARDS {
        every_grain_through(namespaces.daemon_addr(shard), |i| i64::from(i) + 100);
    }
    for d in daemons.into_iter().flatten() {
        assert_eq!(d.terminate().code, Some(0));
    }
}
