//! Access control and TLS through the real `replica-host run`: bearer tokens
//! with scopes read from files and variables, 401/403 answers, reload on
//! SIGHUP, the loopback rule, and HTTPS with a generated certificate.

use std::path::Path;
use std::time::Duration;

use replica_e2e::daemon::{self, Daemon};
use replica_e2e::log_writer::LogWriter;
use replica_e2e::orlando::{self, CounterState};
use sha2::{Digest, Sha256};

const WAIT: Duration = Duration::from_secs(60);
const READER: &str = "reader-token-7f3a9c";
const COUNTER_ONLY: &str = "counter-token-41be02";
const SCRAPER: &str = "metrics-token-c0ffee";
const ENV_TOKEN: &str = "env-token-5d5d5d";

fn sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A log with one Counter and one BankAccount grain (written once), and a
/// config body whose `[http]` section is `http`.
fn setup(dir: &Path, http: &str) -> String {
    let url = format!("sqlite://{}", dir.join("log.db").display());
    if !dir.join("log.db").exists() {
        let writer = LogWriter::open(&url);
        writer.full(
            "Counter",
            "c-1",
            1,
            orlando::bincode(&CounterState { count: 1 }),
        );
        writer.full(
            "BankAccount",
            "a-1",
            1,
            orlando::bincode(&orlando::sample_account(1)),
        );
    }
    let plugins = daemon::plugins(
        dir,
        &[
            ("Counter", "counter-plugin"),
            ("BankAccount", "bank-account-plugin"),
        ],
    );
    daemon::config(&url, &plugins).replace("[http]\nlisten = \"127.0.0.1:0\"\n", http)
}

fn write_tokens(dir: &Path) {
    std::fs::write(
        dir.join("tokens"),
        format!(
            "# grafana and friends\n{}  read\n{} read:Counter\nsha256:{} metrics # prometheus\n",
            sha256(READER),
            sha256(COUNTER_ONLY),
            sha256(SCRAPER)
        ),
    )
    .unwrap();
}

fn assert_one_line_error(r: &replica_e2e::http::Response, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert!(!r.body.trim_end().contains('\n'), "{}", r.body);
    assert_eq!(r.json()["error"], code, "{}", r.body);
    assert!(r.json()["message"].as_str().is_some_and(|m| !m.is_empty()));
}

#[test]
fn tokens_and_scopes_decide_every_request() {
    let dir = tempfile::tempdir().unwrap();
    write_tokens(dir.path());
    let http = "[http]\nlisten = \"127.0.0.1:0\"\nauth = { token_files = [\"tokens\"], token_env = [\"REPLICA_TEST_TOKENS\"] }\n";
    let config = setup(dir.path(), http);
    let d = Daemon::start_with_env(
        dir.path(),
        &config,
        &[(
            "REPLICA_TEST_TOKENS",
            &format!("{} admin read", sha256(ENV_TOKEN)),
        )],
    );

    // Probes stay open.
    assert_eq!(d.get("/healthz").status, 200);
    d.wait_for("/readyz", WAIT, |r| r.status == 200);

    // No token: 401 with the challenges.
    let r = d.get("/v1/replicas/Counter/c-1");
    assert_one_line_error(&r, 401, "unauthorized");
    let challenges: Vec<&str> = r
        .headers
        .iter()
        .filter(|h| h.to_ascii_lowercase().starts_with("www-authenticate:"))
        .map(|h| h.as_str())
        .collect();
    assert!(
        challenges
            .iter()
            .any(|h| h.contains("Bearer realm=\"replica-host\"")),
        "{challenges:?}"
    );
    for path in [
        "/",
        "/metrics",
        "/v1/plugins",
        "/v1/openapi.json",
        "/v1/replicas/Counter",
        "/nope",
    ] {
        assert_eq!(d.get(path).status, 401, "{path}");
    }

    // A wrong token: 401, invalid_token.
    let r = d.get_with(
        "/v1/replicas/Counter/c-1",
        &[("Authorization", &bearer("guess"))],
    );
    assert_one_line_error(&r, 401, "unauthorized");
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
    let almost = &READER[..READER.len() - 1];
    assert_eq!(
        d.get_with("/", &[("Authorization", &bearer(almost))])
            .status,
        401
    );
    let hash_as_token = sha256(READER);
    assert_eq!(
        d.get_with("/", &[("Authorization", &bearer(&hash_as_token))])
            .status,
        401,
        "the hash is not the token"
    );

    // The wrong scope: 403.
    let counter_only = [("Authorization", bearer(COUNTER_ONLY))];
    let as_counter: Vec<(&str, &str)> =
        counter_only.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = d.get_with("/v1/replicas/BankAccount/a-1", &as_counter);
    assert_one_line_error(&r, 403, "forbidden");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("read:BankAccount"),
        "{}",
        r.body
    );
    assert_one_line_error(&d.get_with("/metrics", &as_counter), 403, "forbidden");
    assert_one_line_error(&d.get_with("/", &as_counter), 403, "forbidden");
    let scraper = bearer(SCRAPER);
    assert_one_line_error(
        &d.get_with("/v1/replicas/Counter/c-1", &[("Authorization", &scraper)]),
        403,
        "forbidden",
    );

    // The right scope.
    let r = d.get_with("/v1/replicas/Counter/c-1", &as_counter);
    assert_eq!(
        (r.status, r.json()["state"]["count"].as_i64()),
        (200, Some(1))
    );
    assert_eq!(
        d.get_with("/v1/replicas/Counter?limit=5", &as_counter)
            .status,
        200
    );
    assert_eq!(d.get_with("/v1/plugins", &as_counter).status, 200);
    let reader = bearer(READER);
    for path in [
        "/v1/replicas/BankAccount/a-1",
        "/",
        "/v1/plugins",
        "/v1/openapi.json",
    ] {
        assert_eq!(
            d.get_with(path, &[("Authorization", &reader)]).status,
            200,
            "{path}"
        );
    }
    let r = d.get_with("/metrics", &[("Authorization", &scraper)]);
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("replica_http_auth_denied_total"),
        "denials are counted"
    );
    // The variable's token, and HTTP Basic with the token as the password.
    let env = bearer(ENV_TOKEN);
    assert_eq!(
        d.get_with("/v1/replicas/BankAccount/a-1", &[("Authorization", &env)])
            .status,
        200
    );
    use base64_like::encode;
    let basic = format!("Basic {}", encode(&format!("operator:{READER}")));
    assert_eq!(d.get_with("/", &[("Authorization", &basic)]).status, 200);

    // Tokens are re-read on SIGHUP: the reader's token is revoked, a new one added.
    const ROTATED: &str = "rotated-token-9e9e9e";
    std::fs::write(
        dir.path().join("tokens"),
        format!("{} read\n{} metrics\n", sha256(ROTATED), sha256(SCRAPER)),
    )
    .unwrap();
    d.signal("HUP");
    d.wait_for_log(&["reloaded", "http.auth tokens"], WAIT);
    assert_eq!(d.get_with("/", &[("Authorization", &reader)]).status, 401);
    assert_eq!(
        d.get_with("/", &[("Authorization", &bearer(ROTATED))])
            .status,
        200
    );
    // A broken file on reload keeps the tokens in force.
    std::fs::write(dir.path().join("tokens"), "not-a-hash read\n").unwrap();
    d.signal("HUP");
    d.wait_for_log(&["reload failed", "line 1"], WAIT);
    assert_eq!(
        d.get_with("/", &[("Authorization", &bearer(ROTATED))])
            .status,
        200
    );

    // No token or hash ever reaches the logs or the metrics.
    let metrics = d.get_with("/metrics", &[("Authorization", &scraper)]).body;
    let log = d.stderr().join("\n");
    for secret in [READER, COUNTER_ONLY, SCRAPER, ENV_TOKEN, ROTATED, "guess"] {
        for (what, text) in [("log", &log), ("metrics", &metrics)] {
            assert!(!text.contains(secret), "the {what} shows a token");
            assert!(
                !text.contains(&sha256(secret)),
                "the {what} shows a token's hash"
            );
            assert!(
                !text.contains(&sha256(secret)[..16]),
                "the {what} shows part of a hash"
            );
        }
    }
    assert!(log.contains("SIGHUP received"));
}

/// Base64 for the test's Basic header, to need no extra crate.
mod base64_like {
    pub fn encode(text: &str) -> String {
        const TABLE: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let bytes = text.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(TABLE[(n >> (18 - 6 * i)) as usize & 63] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

#[test]
fn bad_access_config_is_one_line_naming_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("host.toml");

    // A non-loopback address without auth.
    let config = setup(dir.path(), "[http]\nlisten = \"0.0.0.0:0\"\n");
    std::fs::write(&path, &config).unwrap();
    let (code, stderr) = daemon::run_to_exit(&path);
    assert_eq!(code, 2, "{stderr}");
    let line = stderr.lines().find(|l| l.starts_with("error:")).unwrap();
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error:")).count(),
        1
    );
    assert!(
        line.contains("host.toml: http.listen 0.0.0.0:0 is not a loopback address"),
        "{line}"
    );
    assert!(line.contains("allow_unauthenticated = true"), "{line}");
    // ... which an explicit allow_unauthenticated permits.
    let config = setup(
        dir.path(),
        "[http]\nlisten = \"0.0.0.0:0\"\nallow_unauthenticated = true\n",
    );
    let d = Daemon::start(dir.path(), &config);
    let port = d.addr.port();
    let r = replica_e2e::http::get(([127, 0, 0, 1], port).into(), "/v1/plugins").unwrap();
    assert_eq!(r.status, 200);
    drop(d);

    // A token file holding a plain token instead of its hash.
    std::fs::write(
        dir.path().join("tokens"),
        "# ok\nhunter2-plain-token read\n",
    )
    .unwrap();
    let config = setup(
        dir.path(),
        "[http]\nlisten = \"0.0.0.0:0\"\nauth = { token_files = [\"tokens\"] }\n",
    );
    std::fs::write(&path, &config).unwrap();
    let (code, stderr) = daemon::run_to_exit(&path);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("host.toml: http.auth.token_files[0]: "),
        "{stderr}"
    );
    assert!(
        stderr.contains("tokens: line 2: the first field is not a sha256"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("hunter2"),
        "the error shows the line's text"
    );

    // A missing variable, an unknown scope.
    let config = setup(
        dir.path(),
        "[http]\nlisten = \"127.0.0.1:0\"\nauth = { token_env = [\"REPLICA_TEST_NO_SUCH_VAR\"] }\n",
    );
    std::fs::write(&path, &config).unwrap();
    let (code, stderr) = daemon::run_to_exit(&path);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("http.auth.token_env[0]: $REPLICA_TEST_NO_SUCH_VAR"),
        "{stderr}"
    );
    std::fs::write(dir.path().join("tokens"), format!("{} reed\n", sha256("x"))).unwrap();
    let config = setup(
        dir.path(),
        "[http]\nlisten = \"127.0.0.1:0\"\nauth = { token_files = [\"tokens\"] }\n",
    );
    std::fs::write(&path, &config).unwrap();
    let (code, stderr) = daemon::run_to_exit(&path);
    assert_eq!(code, 2);
    assert!(stderr.contains("line 1: unknown scope `reed`"), "{stderr}");

    // An admin token file that is missing, then one that is empty.
    let config = format!(
        "{}\n[admin]\ntoken_file = \"admin.token\"\n",
        setup(dir.path(), "[http]\nlisten = \"127.0.0.1:0\"\n")
    );
    std::fs::write(&path, &config).unwrap();
    let (code, stderr) = daemon::run_to_exit(&path);
    assert_eq!(code, 2);
    assert!(stderr.contains("admin.token_file: "), "{stderr}");
    assert!(stderr.contains("admin.token"), "{stderr}");
    std::fs::write(dir.path().join("admin.token"), "\n\n").unwrap();
    let (code, stderr) = daemon::run_to_exit(&path);
    assert_eq!(code, 2);
    assert!(stderr.contains("the file holds no token"), "{stderr}");

    // Half a TLS pair; an unreadable certificate.
    let config = setup(
        dir.path(),
        "[http]\nlisten = \"127.0.0.1:0\"\ntls_key = \"key.pem\"\n",
    );
    std::fs::write(&path, &config).unwrap();
    let (code, stderr) = daemon::run_to_exit(&path);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("http.tls_key is set but http.tls_cert is not"),
        "{stderr}"
    );
    std::fs::write(dir.path().join("cert.pem"), "not pem").unwrap();
    std::fs::write(dir.path().join("key.pem"), "not pem").unwrap();
    let config = setup(
        dir.path(),
        "[http]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n",
    );
    std::fs::write(&path, &config).unwrap();
    let (code, stderr) = daemon::run_to_exit(&path);
    assert_eq!(code, 2);
    assert!(stderr.contains("host.toml: http.tls_cert: "), "{stderr}");
    assert!(
        stderr.contains("cert.pem: no PEM certificate in the file"),
        "{stderr}"
    );
}

/// A certificate for `localhost` and its key, as PEM.
fn certificate() -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    (cert.cert.pem(), cert.signing_key.serialize_pem())
}

fn https_client(root_pem: &str) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(root_pem.as_bytes()).unwrap())
        .tls_built_in_root_certs(false)
        .build()
        .unwrap()
}

#[test]
fn tls_with_a_generated_certificate_reloaded_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate();
    std::fs::write(dir.path().join("cert.pem"), &cert).unwrap();
    std::fs::write(dir.path().join("key.pem"), &key).unwrap();
    write_tokens(dir.path());
    let config = setup(
        dir.path(),
        "[http]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\nauth = { token_files = [\"tokens\"] }\n",
    );
    let d = Daemon::start(dir.path(), &config);
    let base = format!("https://localhost:{}", d.addr.port());
    let client = https_client(&cert);

    let r = client.get(format!("{base}/healthz")).send().unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .get(format!("{base}/v1/replicas/Counter/c-1"))
        .bearer_auth(READER)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["state"]["count"], 1);
    let r = client.get(format!("{base}/v1/plugins")).send().unwrap();
    assert_eq!(r.status(), 401, "TLS does not replace tokens");

    // Plain HTTP on the TLS port gets no answer; a client that does not
    // trust the certificate fails the handshake.
    let plain = replica_e2e::http::get(d.addr, "/healthz");
    assert!(plain.map_or(true, |r| r.status != 200));
    let (other, _) = certificate();
    assert!(
        https_client(&other)
            .get(format!("{base}/healthz"))
            .send()
            .is_err()
    );

    // SIGHUP re-reads the certificate: new connections get the new one.
    let (cert2, key2) = certificate();
    std::fs::write(dir.path().join("cert.pem"), &cert2).unwrap();
    std::fs::write(dir.path().join("key.pem"), &key2).unwrap();
    d.signal("HUP");
    d.wait_for_log(&["reloaded", "http TLS certificate"], WAIT);
    let r = https_client(&cert2)
        .get(format!("{base}/healthz"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        https_client(&cert)
            .get(format!("{base}/healthz"))
            .send()
            .is_err()
    );

    let exited = d.terminate();
    assert_eq!(exited.code, Some(0));
}
