//! Answers clients can reason about, through the real `replica-host run`, a
//! real log (SQLite file, PostgreSQL) and clients we did not write (curl,
//! an SSE parser): read-your-writes (`min_sequence`, `wait_ms`), bounded
//! staleness, and readiness through a log outage.

use std::process::Command;
use std::time::{Duration, Instant};

use replica_e2e::daemon::{self, Daemon};
use replica_e2e::log_writer::LogWriter;
use replica_e2e::payloads::counter;
use replica_e2e::pg;
use replica_e2e::sse::SseClient;
use sqlx::Connection;

const WAIT: Duration = Duration::from_secs(60);

/// Starts a daemon on `url` replicating Counter, with `http_extra` lines in
/// `[http]`, and waits until it is ready.
fn start(dir: &std::path::Path, url: &str, http_extra: &str) -> Daemon {
    let plugins = daemon::plugins(dir, &[("Counter", "counter-plugin")]);
    let config = daemon::config(url, &plugins).replace(
        "listen = \"127.0.0.1:0\"\n",
        &format!("listen = \"127.0.0.1:0\"\n{http_extra}"),
    );
    let d = Daemon::start(dir, &config);
    d.wait_for("/readyz", WAIT, |r| r.status == 200);
    d
}

/// Runs curl with its defaults on `url`; returns (status, headers, body).
fn curl(url: &str) -> (u16, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-D", "-", url])
        .output()
        .expect("curl runs (install it: apt-get install curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[test]
fn min_sequence_answers_at_once_after_a_wait_or_409() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("log.db").display());
    let writer = LogWriter::open(&url);
    writer.full("Counter", "c-1", 1, counter(1));
    let d = start(dir.path(), &url, "max_wait_ms = 2000\n");
    d.wait_for_replica("Counter", "c-1", WAIT, |r| r["sequence"] == 1);
    let base = format!("http://{}/v1/replicas/Counter", d.addr);

    // Held already: answered at once, with the position in headers.
    let r = d.get("/v1/replicas/Counter/c-1?min_sequence=1");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("replica-sequence"), Some("1"));

    // Written while curl waits: curl gets it as soon as it is applied.
    let waiting = {
        let url = format!("{base}/c-1?min_sequence=2&wait_ms=600000");
        std::thread::spawn(move || {
            let started = Instant::now();
            (curl(&url), started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    writer.full("Counter", "c-1", 2, counter(2));
    let ((status, head, body), took) = waiting.join().unwrap();
    assert_eq!(status, 200, "{head}{body}");
    assert_eq!(header(&head, "replica-sequence"), Some("2"), "{head}");
    assert!(header(&head, "replica-staleness-ms").is_some(), "{head}");
    assert!(
        header(&head, "replica-timestamp").is_some_and(|t| t.ends_with('Z')),
        "{head}"
    );
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["state"]["count"], 2);
    eprintln!("a waiting read was answered {took:?} after it was sent");

    // A grain the host does not hold yet is waited for too.
    let new_grain = {
        let url = format!("{base}/c-new?min_sequence=1&wait_ms=600000");
        std::thread::spawn(move || curl(&url))
    };
    std::thread::sleep(Duration::from_millis(300));
    writer.full("Counter", "c-new", 1, counter(7));
    let (status, _, body) = new_grain.join().unwrap();
    assert_eq!(status, 200, "{body}");

    // Not there within the wait: 409 not_yet, with what is held, after at
    // most `[http] max_wait_ms` however long the client asked to wait.
    let started = Instant::now();
    let r = d.get("/v1/replicas/Counter/c-1?min_sequence=9&wait_ms=600000");
    let took = started.elapsed();
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(
        (
            r.json()["error"].as_str(),
            &r.json()["sequence"],
            &r.json()["wanted"]
        ),
        (Some("not_yet"), &2.into(), &9.into())
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(
        took < Duration::from_secs(30),
        "capped by max_wait_ms: {took:?}"
    );
    let r = d.get("/v1/replicas/Counter/c-1?min_sequence=9");
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (409, Some("not_yet"))
    );

    // A grain failing below the sequence wanted: 409 failing, at once.
    writer.full("Counter", "c-1", 3, vec![0xff, 0xff]);
    d.wait_for("/v1/replicas/Counter/c-1", WAIT, |r| {
        r.json()["status"] == "failing"
    });
    let started = Instant::now();
    let r = d.get("/v1/replicas/Counter/c-1?min_sequence=5&wait_ms=600000");
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.json()["error"], "failing");
    assert!(
        r.json()["reason"]
            .as_str()
            .unwrap()
            .contains("malformed_payload"),
        "{}",
        r.body
    );
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "answered without waiting out max_wait_ms: {:?}",
        started.elapsed()
    );

    // The change stream: the first event is at least min_sequence.
    writer.full("Counter", "c-1", 4, counter(4));
    let mut sse = SseClient::connect(&format!("{base}/c-1?watch=true&min_sequence=5"), &[]);
    writer.full("Counter", "c-1", 5, counter(5));
    let (event, replica) = sse.next_replica(WAIT).expect("an event at 5");
    assert_eq!((event.id.as_str(), &replica["sequence"]), ("5", &5.into()));

    // No plugin for the type: 404 at once, not a wait.
    let r = d.get("/v1/replicas/Nope/x?min_sequence=1&wait_ms=600000");
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (404, Some("unknown_grain_type"))
    );
    let r = d.get("/v1/replicas/Counter/c-1?min_sequence=-1");
    assert_eq!(r.status, 400);
}

/// Moves the log's table out of the way (`away`) or back.
type Rename = Box<dyn Fn(bool)>;

/// Through an outage of the log: reads go on with a growing staleness,
/// `max_staleness_ms` refuses them, `/readyz` holds for the allowance, then
/// answers 503 `log_unreachable`; all comes back with the log.
fn served_through_a_log_outage(url: &str, rename: Rename) {
    let dir = tempfile::tempdir().unwrap();
    let writer = LogWriter::open(url);
    writer.full("Counter", "c-1", 1, counter(1));
    let d = start(dir.path(), url, "ready_during_log_outage_s = 4\n");
    d.wait_for_replica("Counter", "c-1", WAIT, |r| r["sequence"] == 1);
    let staleness = |r: &replica_e2e::http::Response| -> u64 {
        r.header("replica-staleness-ms").unwrap().parse().unwrap()
    };
    let before = d.wait_for("/v1/replicas/Counter/c-1", WAIT, |r| staleness(r) < 2_000);
    let before = staleness(&before);

    rename(true);
    let outage = Instant::now();
    // (ready, staleness) as the outage goes on.
    let mut seen: Vec<(u16, u64)> = Vec::new();
    let unready = loop {
        let ready = d.get("/readyz");
        let r = d.get("/v1/replicas/Counter/c-1");
        assert_eq!(r.status, 200, "reads go on during the outage: {}", r.body);
        seen.push((ready.status, staleness(&r)));
        if ready.status == 503 {
            break ready;
        }
        assert!(outage.elapsed() < WAIT, "never unready: {seen:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let took = outage.elapsed();
    eprintln!("outage: unready after {took:?}; (readyz, staleness) seen: {seen:?}");
    assert_eq!(
        unready.json()["error"],
        "log_unreachable",
        "{}",
        unready.body
    );
    assert!(
        took >= Duration::from_secs(4),
        "ready for the allowance: {took:?}"
    );
    let ready_and_stale = seen
        .iter()
        .filter(|(ready, s)| *ready == 200 && *s > before + 1_000)
        .count();
    assert!(ready_and_stale > 0, "ready while staleness grew: {seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0].1 <= w[1].1 + 50),
        "staleness grows: {seen:?}"
    );
    let r = d.get("/v1/replicas/Counter/c-1?max_staleness_ms=1000");
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (409, Some("stale")),
        "{}",
        r.body
    );
    assert!(r.json()["staleness_ms"].as_u64().unwrap() > 1_000);

    rename(false);
    writer.full("Counter", "c-1", 2, counter(2));
    d.wait_for("/readyz", WAIT, |r| r.status == 200);
    let r = d.wait_for_replica("Counter", "c-1", WAIT, |r| r["sequence"] == 2);
    assert!(
        r["staleness_ms"].as_u64().unwrap() < seen.last().unwrap().1,
        "{r}"
    );
}

#[test]
fn sqlite_reads_are_served_through_a_log_outage_until_the_allowance() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let url = format!("sqlite://{}", path.display());
    let rename: Rename = Box::new(move |away| {
        let sql = if away {
            "ALTER TABLE replication_log RENAME TO replication_log_away"
        } else {
            "ALTER TABLE replication_log_away RENAME TO replication_log"
        };
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            sqlx::query(sql).execute(&mut c).await.unwrap();
        });
    });
    served_through_a_log_outage(&url, rename);
}

#[test]
fn postgres_reads_are_served_through_a_log_outage_until_the_allowance() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(schema) = rt.block_on(pg::isolated_schema("outage")) else {
        return;
    };
    let name = schema.name().to_owned();
    let admin = schema.admin_url().to_owned();
    let rename: Rename = Box::new(move |away| {
        let sql = if away {
            format!("ALTER TABLE \"{name}\".replication_log RENAME TO replication_log_away")
        } else {
            format!("ALTER TABLE \"{name}\".replication_log_away RENAME TO replication_log")
        };
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
            sqlx::query(&sql).execute(&mut c).await.unwrap();
        });
    });
    served_through_a_log_outage(schema.url(), rename);
}
