//! `host/examples/orlando_secondary.rs` runs: against a real SQLite log it
//! loads the plugins from a directory, catches up, prints a grain's typed
//! state, and prints the change this test writes while it watches.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use replica_e2e::log_writer::LogWriter;
use replica_e2e::orlando::{self, CounterState};

#[test]
fn the_embedding_example_replicates_reads_typed_state_and_follows_changes() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("log.db").display());
    let writer = LogWriter::open(&url);
    writer.full(
        "Counter",
        "c-1",
        1,
        orlando::bincode(&CounterState { count: 1 }),
    );
    writer.full(
        "Counter",
        "c-1",
        2,
        orlando::bincode(&CounterState { count: 41 }),
    );
    writer.full(
        "Counter",
        "c-2",
        1,
        orlando::bincode(&CounterState { count: 7 }),
    );
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    replica_e2e::daemon::copy_plugin(&plugins, "counter-plugin");
    replica_e2e::daemon::copy_plugin(&plugins, "user-profile-plugin");

    let mut child = Command::new(replica_e2e::example_bin("orlando_secondary"))
        .arg(&url)
        .arg(&plugins)
        .args(["Counter", "c-1", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the example");
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let mut expect = |needle: &str| -> String {
        loop {
            let line = lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| {
                    panic!(
                        "no line with {needle:?}; output so far:\n{}",
                        seen.join("\n")
                    )
                });
            seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    };
    let plugin = expect("plugin ");
    assert!(plugin.contains("counter-plugin.wasm"), "{plugin}");
    assert_eq!(expect("caught up"), "caught up: 2 grains");
    assert_eq!(
        expect("Counter/c-1 at sequence"),
        "Counter/c-1 at sequence 2: Some(CounterState { count: 41 })"
    );
    expect("watching Counter/c-1");
    writer.full(
        "Counter",
        "c-1",
        3,
        orlando::bincode(&CounterState { count: 42 }),
    );
    assert_eq!(
        expect("changed"),
        "changed Counter/c-1 to sequence 3: Some(CounterState { count: 42 })"
    );
    expect("stopped");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}
