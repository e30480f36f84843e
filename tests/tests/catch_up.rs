//! A restart must not serve wrong answers: through the real daemon, the
//! initial catch-up is visible (`/readyz` 503 with progress), a grain not
//! caught up yet is 503 `catching_up` with `Retry-After` rather than a 404,
//! and once caught up a 404 means the log has no such grain. Sharding: with
//! `[consumer] shard = "i/n"` three hosts on one log hold every grain
//! exactly once, and a read of another shard's grain is 421 naming its owner.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use replica_e2e::daemon::{self, Daemon};
use replica_e2e::log_writer::LogWriter;
use replica_e2e::payloads::counter;
use replica_host::consumer::shard::shard_of;

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn readiness_and_reads_are_honest_during_the_initial_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("log.db").display());
    let writer = LogWriter::open(&url);
    // Slow grains (each decode spins ~0.1 s) so the catch-up takes seconds.
    const SLOW: usize = 60;
    for n in 0..SLOW {
        writer.full("Misbehave", &format!("m-{n:02}"), 1, b"spin:120".to_vec());
    }
    for n in 0..20 {
        writer.full("Counter", &format!("c-{n:02}"), 1, counter(n));
    }
    let counter_plugin = daemon::copy_plugin(dir.path(), "counter-plugin");
    let misbehave = daemon::copy_plugin(dir.path(), "misbehave-plugin");
    let plugins = format!(
        "[[plugin]]\ngrain_type = \"Counter\"\npath = \"{counter_plugin}\"\n\n\
         [[plugin]]\ngrain_type = \"Misbehave\"\npath = \"{misbehave}\"\ntimeout_ms = 5000\n"
    );
    let d = Daemon::start(dir.path(), &daemon::config(&url, &plugins));

    // Catching up: 503 with progress, and reads of grains not yet replicated
    // are 503 catching_up with Retry-After.
    let last = format!("/v1/replicas/Misbehave/m-{:02}", SLOW - 1);
    let mut saw_progress = false;
    let mut saw_catching_up = false;
    let deadline = Instant::now() + WAIT;
    loop {
        let ready = d.get("/readyz");
        if ready.status == 200 {
            break;
        }
        assert_eq!(ready.status, 503, "{}", ready.body);
        assert_eq!(ready.header("retry-after"), Some("1"));
        let body = ready.json();
        if body["grains"] == (SLOW + 20) as u64 && body["caught_up"].as_u64().unwrap() < 80 {
            saw_progress = true;
        }
        let read = d.get(&last);
        if read.status == 503 {
            assert_eq!(read.json()["error"], "catching_up", "{}", read.body);
            assert_eq!(read.header("retry-after"), Some("1"));
            saw_catching_up = true;
        } else {
            assert_eq!(read.status, 200, "{}", read.body);
        }
        assert!(
            Instant::now() < deadline,
            "never ready; last {}",
            ready.body
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(saw_progress, "never saw the catch-up in progress");
    assert!(saw_catching_up, "never saw a catching_up read");

    // Ready: every grain is served, and a 404 means no such grain.
    let ready = d.get("/readyz").json();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["caught_up"], 80);
    assert_eq!(ready["grains"], 80);
    for n in 0..SLOW {
        let r = d.get(&format!("/v1/replicas/Misbehave/m-{n:02}"));
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["state"]["count"], 120);
    }
    assert_eq!(
        d.get("/v1/replicas/Counter/c-07").json()["state"]["count"],
        7
    );
    let missing = d.get("/v1/replicas/Counter/no-such-grain");
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert_eq!(missing.json()["error"], "unknown_grain");

    let metrics = d.get("/metrics").body;
    assert!(
        metrics.contains("replica_scheduler_workers_busy"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"replica_scheduler_queue_depth{grain_type="Counter"}"#),
        "{metrics}"
    );
    let exited = d.terminate();
    assert_eq!(exited.code, Some(0), "{:?}", exited.stderr);
}

/// Every key a host holds, through the paged listing.
fn keys(d: &Daemon) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/replicas/Counter?limit=1000&after={a}"),
            None => "/v1/replicas/Counter?limit=1000".to_owned(),
        };
        let page = d.get(&path).json();
        for key in page["keys"].as_array().unwrap() {
            keys.insert(key.as_str().unwrap().to_owned());
        }
        match page["next_after"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return keys,
        }
    }
}

#[test]
fn three_sharded_hosts_on_one_log_hold_every_grain_exactly_once() {
    const GRAINS: i64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("log.db").display());
    let writer = LogWriter::open(&url);
    for n in 0..GRAINS {
        writer.full("Counter", &format!("k{n:03}"), 1, counter(n));
    }
    let hosts: Vec<Daemon> = (0..3)
        .map(|i| {
            let host_dir = dir.path().join(format!("host{i}"));
            std::fs::create_dir(&host_dir).unwrap();
            let plugin = daemon::copy_plugin(&host_dir, "counter-plugin");
            let config = daemon::config(
                &url,
                &format!("[[plugin]]\ngrain_type = \"Counter\"\npath = \"{plugin}\"\n"),
            )
            .replace("[consumer]\n", &format!("[consumer]\nshard = \"{i}/3\"\n"));
            Daemon::start(&host_dir, &config)
        })
        .collect();
    for host in &hosts {
        host.wait_for("/readyz", WAIT, |r| r.status == 200);
    }
    let held: Vec<BTreeSet<String>> = hosts.iter().map(keys).collect();
    let mut all = BTreeSet::new();
    for (i, keys) in held.iter().enumerate() {
        assert!(keys.len() > 60, "host {i} holds {} grains", keys.len());
        for key in keys {
            assert_eq!(shard_of("Counter", key, 3), i as u32, "{key} on host {i}");
            assert!(all.insert(key.clone()), "{key} held twice");
        }
    }
    assert_eq!(all.len(), GRAINS as usize, "grains lost");

    // Reads: 200 on the owner, 421 naming the owner elsewhere.
    for n in (0..GRAINS).step_by(37) {
        let key = format!("k{n:03}");
        let owner = shard_of("Counter", &key, 3) as usize;
        for (i, host) in hosts.iter().enumerate() {
            let r = host.get(&format!("/v1/replicas/Counter/{key}"));
            if i == owner {
                assert_eq!(r.status, 200, "{}", r.body);
                assert_eq!(r.json()["state"]["count"], n);
            } else {
                assert_eq!(r.status, 421, "{}", r.body);
                assert_eq!(r.json()["error"], "misdirected");
                let message = r.json()["message"].as_str().unwrap().to_owned();
                assert!(message.contains(&format!("shard {owner}/3")), "{message}");
            }
        }
    }
    for host in hosts {
        assert_eq!(host.terminate().code, Some(0));
    }
}
