//! Change streams (Server-Sent Events) and conditional reads, through the
//! real `replica-host run` and a real SSE client.

use std::time::Duration;

use replica_e2e::daemon::{self, Daemon};
use replica_e2e::log_writer::LogWriter;
use replica_e2e::orlando::{self, CounterState, UserProfile};
use replica_e2e::sse::SseClient;

const WAIT: Duration = Duration::from_secs(60);

fn counter(n: i64) -> Vec<u8> {
    orlando::bincode(&CounterState { count: n })
}

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
    // The same JSON as a plain read.
    assert_eq!(replica, d.replica("Counter", "c-1").json());
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

    // A grain type's stream: every current replica first, then each change.
    let mut all = SseClient::connect(
        &format!("http://{}/v1/replicas/Counter?watch=true", d.addr),
        &[],
    );
    let mut first: Vec<(String, String)> = (0..2)
        .map(|_| {
            let (event, r) = all.next_replica(WAIT).unwrap();
            (r["grain_key"].as_str().unwrap().to_owned(), event.id)
        })
        .collect();
    first.sort();
    assert_eq!(
        first,
        [("c-1".into(), "7".into()), ("c-2".into(), "2".into())]
    );
    writer.full("Counter", "c-3", 4, counter(3));
    let (event, r) = all.next_replica(WAIT).unwrap();
    assert_eq!(
        (r["grain_key"].as_str(), event.id.as_str()),
        (Some("c-3"), "4")
    );

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
fn a_slow_client_gets_resync_and_the_current_state_not_unbounded_buffering() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, d) = start(dir.path(), "watch_buffer = 32\n");
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
    let (event, _) = sse.next_replica(WAIT).unwrap();
    assert_eq!(event.id, "1");

    // The client stops reading while 600 large replicas change.
    const GRAINS: usize = 600;
    for i in 1..GRAINS {
        writer.full("UserProfile", &format!("u-{i:04}"), 1, profile(i, 1));
    }
    writer.full("UserProfile", "u-0000", 2, profile(0, 2));
    d.wait_for_replica("UserProfile", "u-0000", WAIT, |r| r["sequence"] == 2);
    d.wait_for(
        &format!("/v1/replicas/UserProfile/u-{:04}", GRAINS - 1),
        WAIT,
        |r| r.status == 200,
    );

    // Reading again: whatever was in flight, then `resync`, then every
    // grain's current state.
    let mut before_resync = 0;
    let resync = loop {
        let event = sse.next(WAIT).expect("a resync event");
        if event.event == "resync" {
            break event;
        }
        before_resync += 1;
    };
    assert!(
        before_resync < GRAINS,
        "{before_resync} events were buffered for a client that did not read"
    );
    let missed: serde_json::Value = serde_json::from_str(&resync.data).unwrap();
    let missed = missed["missed_changes"].as_u64().unwrap();
    assert!(missed > 0, "{}", resync.data);
    eprintln!(
        "slow client: {before_resync} events were in flight when it read again, \
         {missed} changes were not buffered for it"
    );
    let mut current = std::collections::BTreeMap::new();
    while current.len() < GRAINS {
        let (event, r) = sse
            .next_replica(WAIT)
            .expect("the current state after resync");
        current.insert(r["grain_key"].as_str().unwrap().to_owned(), event.id);
    }
    assert_eq!(current["u-0000"], "2", "the newest state, after the resync");
    assert!(d.get("/healthz").status == 200);
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
