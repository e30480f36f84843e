//! Change streams (Server-Sent Events) and conditional reads, through the
//! real `replica-host run` and a real SSE client.

use std::time::Duration;

use replica_e2e::daemon::{self, Daemon};
use replica_e2e::log_writer::LogWriter;
use replica_e2e::orlando::{self, UserProfile};
use replica_e2e::payloads::counter;
use replica_e2e::sse::SseClient;

const WAIT: Duration = Duration::from_secs(60);

fn start(dir: &std::path::Path, http_extra: &str) -> (LogWriter, Daemon) {
    let url = format!("sqlite://{}", dir.join("log.db").display());
    let writer = LogWriter::open(&url);
    writer.full("Counter", "c-1", 1, counter(1));
    writer.full("Counter", "c-2", 1, counter(20));
    let plugins = daemon::plugins(
        dir,
        &[
            ("Counter", "counter-plugin"),
            ("UserProfile", "user-profile-plugin"),
        ],
    );
    let config = daemon::config(&url, &plugins).replace(
        "listen = \"127.0.0.1:0\"\n",
        &format!("listen = \"127.0.0.1:0\"\n{http_extra}"),
    );
    let d = Daemon::start(dir, &config);
    d.wait_for("/readyz", WAIT, |r| r.status == 200);
    (writer, d)
}

#[test]
fn a_grain_stream_resumes_after_a_disconnect_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, d) = start(dir.path(), "");
    let url = format!("http://{}/v1/replicas/Counter/c-1?watch=true", d.addr);

    let mut sse = SseClient::connect(&url, &[]);
    assert_eq!(sse.status, 200);
    assert!(
        sse.content_type.starts_with("text/event-stream"),
        "{}",
        sse.content_type
    );
    let (event, replica) = sse.next_replica(WAIT).expect("the current replica first");
    assert_eq!(event.id, "1");
    // The same JSON as a plain read (but for the staleness, which grows).
    assert_eq!(
        daemon::without_staleness(replica),
        daemon::without_staleness(d.replica("Counter", "c-1").json())
    );
    writer.full("Counter", "c-1", 2, counter(2));
    let (event, replica) = sse.next_replica(WAIT).expect("the change");
    assert_eq!(
        (event.id.as_str(), &replica["state"]["count"]),
        ("2", &2.into())
    );
    drop(sse);

    // Written while nobody watches.
    for n in 3..=5 {
        writer.full("Counter", "c-1", n, counter(n as i64));
    }
    d.wait_for_replica("Counter", "c-1", WAIT, |r| r["sequence"] == 5);

    let mut sse = SseClient::connect(&url, &[("Last-Event-ID", "2")]);
    let (event, replica) = sse.next_replica(WAIT).expect("the state missed while away");
    assert_eq!(event.id, "5", "resumes at the newest state, not before it");
    assert_eq!(replica["state"]["count"], 5);
    writer.full("Counter", "c-1", 6, counter(6));
    let (event, _) = sse.next_replica(WAIT).expect("then follows");
    assert_eq!(event.id, "6");

    // `?after=` resumes the same way; nothing is repeated when up to date.
    d.wait_for_replica("Counter", "c-1", WAIT, |r| r["sequence"] == 6);
    let mut current = SseClient::connect(&format!("{url}&after=6"), &[]);
    writer.full("Counter", "c-1", 7, counter(7));
    let (event, replica) = current.next_replica(WAIT).expect("the next change");
    assert_eq!(
        (event.id.as_str(), &replica["state"]["count"]),
        ("7", &7.into())
    );
    let (event, _) = sse.next_replica(WAIT).unwrap();
    assert_eq!(event.id, "7");
    // Changes of other grains never reach a grain's stream.
    writer.full("Counter", "c-2", 2, counter(21));
    d.wait_for_replica("Counter", "c-2", WAIT, |r| r["sequence"] == 2);
    assert!(sse.next_replica(Duration::from_millis(500)).is_none());

    // A grain type's stream: every current replica first, then each change;
    // its ids are cursors (EPOCH.VERSION), growing.
    let mut all = SseClient::connect(
        &format!("http://{}/v1/replicas/Counter?watch=true", d.addr),
        &[],
    );
    let version = |id: &str| -> u64 { id.split_once('.').unwrap().1.parse().unwrap() };
    let mut first: Vec<(String, u64, u64)> = (0..2)
        .map(|_| {
            let (event, r) = all.next_replica(WAIT).unwrap();
            let key = r["grain_key"].as_str().unwrap().to_owned();
            (key, r["sequence"].as_u64().unwrap(), version(&event.id))
        })
        .collect();
    assert!(first[0].2 < first[1].2, "{first:?}");
    let last_cursor = first[1].2;
    first.sort();
    let sequences: Vec<(String, u64)> = first.into_iter().map(|(k, s, _)| (k, s)).collect();
    assert_eq!(sequences, [("c-1".into(), 7), ("c-2".into(), 2)]);
    writer.full("Counter", "c-3", 4, counter(3));
    let (event, r) = all.next_replica(WAIT).unwrap();
    assert_eq!(
        (r["grain_key"].as_str(), r["sequence"].as_u64()),
        (Some("c-3"), Some(4))
    );
    assert!(version(&event.id) > last_cursor, "{}", event.id);

    // Unknown grain types are 404s, not empty streams.
    let r = d.get("/v1/replicas/Nope/x?watch=true");
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (404, Some("unknown_grain_type"))
    );

    // Streams end at shutdown instead of holding the daemon up.
    let exited = d.terminate();
    assert_eq!(exited.code, Some(0));
    assert!(exited.took < Duration::from_secs(10), "{:?}", exited.took);
}

#[test]
fn a_slow_client_reads_each_grain_once_at_its_newest_with_nothing_buffered_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, d) = start(dir.path(), "");
    let profile = |i: usize, visits: u32| {
        orlando::json(&UserProfile {
            name: format!("user {i} {}", "x".repeat(8 * 1024)),
            email: format!("u{i}@example.com"),
            visits,
            roles: vec![],
        })
    };
    writer.full("UserProfile", "u-0000", 1, profile(0, 1));
    d.wait_for_replica("UserProfile", "u-0000", WAIT, |_| true);

    let mut sse = SseClient::connect(
        &format!("http://{}/v1/replicas/UserProfile?watch=true", d.addr),
        &[],
    );
    let (_, first) = sse.next_replica(WAIT).unwrap();
    assert_eq!(
        (&first["grain_key"], &first["sequence"]),
        (&"u-0000".into(), &1.into())
    );

    // The client stops reading while 600 large replicas change, each twice.
    const GRAINS: usize = 600;
    for i in 0..GRAINS {
        writer.full("UserProfile", &format!("u-{i:04}"), 2, profile(i, 2));
    }
    for i in 0..GRAINS {
        writer.full("UserProfile", &format!("u-{i:04}"), 3, profile(i, 3));
    }
    d.wait_for(
        &format!("/v1/replicas/UserProfile/u-{:04}", GRAINS - 1),
        WAIT,
        |r| r.status == 200 && r.json()["sequence"] == 3,
    );

    // Reading again: what was in flight in the socket, then each grain once
    // at its newest state; per grain, sequences only grow.
    let mut seen: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    while seen.values().filter(|s| s.last() == Some(&3)).count() < GRAINS {
        let event = sse.next(WAIT).expect("every grain at its newest state");
        assert_ne!(event.event, "resync", "a slow client needs no resync");
        if event.event != "message" {
            continue;
        }
        let r: serde_json::Value = serde_json::from_str(&event.data).unwrap();
        seen.entry(r["grain_key"].as_str().unwrap().to_owned())
            .or_default()
            .push(r["sequence"].as_u64().unwrap());
    }
    let events: usize = seen.values().map(Vec::len).sum();
    for (key, sequences) in &seen {
        assert!(
            sequences.windows(2).all(|w| w[0] < w[1]),
            "{key}: {sequences:?}"
        );
    }
    eprintln!(
        "slow client: {events} replica events for {GRAINS} grains changed twice ({} changes)",
        2 * GRAINS
    );
    assert!(
        events < 2 * GRAINS,
        "{events} events: the host sent every change instead of each grain's newest"
    );
    assert!(d.get("/healthz").status == 200);
}

/// Per grain, what a type stream delivered: data events' sequences.
type Delivered = std::collections::BTreeMap<String, Vec<u64>>;

/// Reads `sse` until `until` holds or nothing comes for a while; returns
/// the last cursor seen.
fn read_type_stream(
    sse: &mut SseClient,
    delivered: &mut Delivered,
    mut until: impl FnMut(&Delivered) -> bool,
    quiet: Duration,
) -> Option<String> {
    let mut cursor = None;
    while !until(delivered) {
        let Some(event) = sse.next(quiet) else { break };
        assert_ne!(event.event, "resync", "a live cursor never needs a resync");
        if !event.id.is_empty() {
            cursor = Some(event.id.clone());
        }
        if event.event == "message" {
            let r: serde_json::Value = serde_json::from_str(&event.data).unwrap();
            delivered
                .entry(r["grain_key"].as_str().unwrap().to_owned())
                .or_default()
                .push(r["sequence"].as_u64().unwrap());
        }
    }
    cursor
}

#[test]
fn a_type_stream_under_concurrent_writes_and_reconnects_never_goes_backwards_nor_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, d) = start(dir.path(), "");
    const GRAINS: u64 = 300;
    const ROUNDS: u64 = 6;
    for i in 0..GRAINS {
        writer.full("Counter", &format!("k-{i:03}"), 1, counter(1));
    }
    d.wait_for(
        &format!("/v1/replicas/Counter/k-{:03}", GRAINS - 1),
        WAIT,
        |r| r.status == 200,
    );
    let url = format!("http://{}/v1/replicas/Counter?watch=true", d.addr);

    // A writer appends round after round while the client reads a little,
    // disconnects, and comes back with `Last-Event-ID`.
    let url_for_writer = format!("sqlite://{}", dir.path().join("log.db").display());
    let appender = std::thread::spawn(move || {
        let writer = LogWriter::open(&url_for_writer);
        for round in 2..=ROUNDS + 1 {
            for i in (0..GRAINS).filter(|i| !(i + round).is_multiple_of(3)) {
                writer.full(
                    "Counter",
                    &format!("k-{i:03}"),
                    round,
                    counter(round as i64),
                );
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    });
    let mut delivered = Delivered::new();
    let mut cursor: Option<String> = None;
    let mut reconnects = 0;
    while !appender.is_finished() {
        let headers: Vec<(&str, &str)> = cursor
            .as_deref()
            .map(|c| vec![("Last-Event-ID", c)])
            .unwrap_or_default();
        let mut sse = SseClient::connect(&url, &headers);
        let target = delivered.values().map(Vec::len).sum::<usize>() + 150;
        if let Some(last) = read_type_stream(
            &mut sse,
            &mut delivered,
            |d| d.values().map(Vec::len).sum::<usize>() >= target,
            Duration::from_millis(500),
        ) {
            cursor = Some(last);
        }
        reconnects += 1;
    }
    appender.join().unwrap();

    // The newest sequence the log holds per grain.
    let newest = |i: u64| {
        (2..=ROUNDS + 1)
            .rev()
            .find(|round| !(i + round).is_multiple_of(3))
            .unwrap_or(1)
    };
    d.wait_for(
        &format!("/v1/replicas/Counter/k-{:03}", GRAINS - 1),
        WAIT,
        |r| r.json()["sequence"] == newest(GRAINS - 1),
    );
    let mut sse = SseClient::connect(&url, &[("Last-Event-ID", cursor.as_deref().unwrap())]);
    read_type_stream(
        &mut sse,
        &mut delivered,
        |d| {
            (0..GRAINS)
                .all(|i| d.get(&format!("k-{i:03}")).and_then(|s| s.last()) == Some(&newest(i)))
        },
        WAIT,
    );
    for i in 0..GRAINS {
        let key = format!("k-{i:03}");
        let sequences = &delivered[&key];
        assert!(
            sequences.windows(2).all(|w| w[0] < w[1]),
            "{key} went backwards or repeated: {sequences:?}"
        );
        assert_eq!(sequences.last(), Some(&newest(i)), "{key}: {sequences:?}");
    }
    let events: usize = delivered.values().map(Vec::len).sum();
    eprintln!("{reconnects} reconnects, {events} replica events for {GRAINS} grains");

    // Up to date: a reconnect with the cursor sends only what changes next.
    let cursor = read_type_stream(
        &mut sse,
        &mut delivered,
        |_| false,
        Duration::from_millis(300),
    )
    .or(cursor)
    .unwrap();
    drop(sse);
    writer.full("Counter", "k-007", 100, counter(100));
    let mut sse = SseClient::connect(&url, &[("Last-Event-ID", &cursor)]);
    let (_, first) = sse.next_replica(WAIT).expect("the change made while away");
    assert_eq!(
        (&first["grain_key"], &first["sequence"]),
        (&"k-007".into(), &100.into()),
        "only what changed since the cursor, not the whole type"
    );
}

#[test]
fn a_cursor_from_another_run_gets_resync_then_every_grain() {
    let dir = tempfile::tempdir().unwrap();
    let (_writer, d) = start(dir.path(), "");
    let url = format!("http://{}/v1/replicas/Counter?watch=true", d.addr);
    let mut sse = SseClient::connect(&url, &[("Last-Event-ID", "00000000000000aa.5")]);
    let first = sse.next(WAIT).expect("an event");
    assert_eq!(first.event, "resync", "{first:?}");
    let mut keys = std::collections::BTreeSet::new();
    while keys.len() < 2 {
        let (event, r) = sse.next_replica(WAIT).expect("every grain after resync");
        assert!(event.id.contains('.'), "a cursor: {}", event.id);
        keys.insert(r["grain_key"].as_str().unwrap().to_owned());
    }
    assert_eq!(keys.into_iter().collect::<Vec<_>>(), ["c-1", "c-2"]);

    let mut not_a_cursor = SseClient::connect(&url, &[("Last-Event-ID", "2")]);
    assert_eq!(not_a_cursor.next(WAIT).unwrap().event, "resync");
}

#[test]
fn an_unchanged_replica_answers_304_to_its_etag() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, d) = start(dir.path(), "");
    let r = d.replica("Counter", "c-1");
    let tag = r.header("etag").expect("an ETag").to_owned();
    assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");

    let r = d.get_with("/v1/replicas/Counter/c-1", &[("If-None-Match", &tag)]);
    assert_eq!(r.status, 304);
    assert_eq!(r.body, "");
    assert_eq!(r.header("etag"), Some(tag.as_str()));
    let r = d.get_with(
        "/v1/replicas/Counter/c-1",
        &[("If-None-Match", &format!("W/{tag}, \"other\""))],
    );
    assert_eq!(r.status, 304, "a weak or listed tag matches too");
    let other = d
        .replica("Counter", "c-2")
        .header("etag")
        .unwrap()
        .to_owned();
    assert_ne!(other, tag, "another grain, another tag");

    // A new snapshot, and then a new status at the same sequence, each change it.
    writer.full("Counter", "c-1", 2, counter(2));
    let r = d.wait_for("/v1/replicas/Counter/c-1", WAIT, |r| {
        r.json()["sequence"] == 2
    });
    let second = r.header("etag").unwrap().to_owned();
    assert_ne!(second, tag);
    let r = d.get_with("/v1/replicas/Counter/c-1", &[("If-None-Match", &tag)]);
    assert_eq!((r.status, r.json()["sequence"].as_u64()), (200, Some(2)));
    writer.full("Counter", "c-1", 3, vec![0xff]);
    let r = d.wait_for("/v1/replicas/Counter/c-1", WAIT, |r| {
        r.json()["status"] == "failing"
    });
    assert_eq!(r.json()["sequence"], 2);
    assert_ne!(r.header("etag").unwrap(), second, "failing is news too");
    let r = d.get_with("/v1/replicas/Counter/c-1", &[("If-None-Match", &second)]);
    assert_eq!(r.status, 200);
}
