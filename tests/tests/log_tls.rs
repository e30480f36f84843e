//! PostgreSQL over TLS, end to end: a PostgreSQL server of the test's own
//! (TLS with a CA made here, SCRAM passwords) and the real `replica-host`
//! binary. `verify-full` replicates; a wrong CA, a wrong host name under
//! `verify-full`, and `require` against a server without TLS are one line
//! and exit status 1 naming the URL and the TLS reason; the password is in
//! no output.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use replica_e2e::daemon::{self, Daemon};
use replica_e2e::log_writer::LogWriter;
use replica_e2e::orlando::{self, CounterState};
use replica_e2e::pg_server::{PgServer, TestCa};

fn config(dir: &Path, url: &str, extra_log: &str) -> String {
    let counter = daemon::copy_plugin(dir, "counter-plugin");
    format!(
        "cluster_id = \"tls\"\n\n[log]\nurl = \"{url}\"\n{extra_log}\n[consumer]\npoll_interval_ms = 50\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n[[plugin]]\ngrain_type = \"Counter\"\npath = \"{counter}\"\n"
    )
}

/// Runs `replica-host run` on `config` to its exit: (status, stderr).
fn run_to_exit(dir: &Path, config: &str, envs: &[(&str, &str)]) -> (i32, String) {
    let path = dir.join("host.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(replica_e2e::host_bin())
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .env_remove("PGPASSWORD")
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The one `error:` line of a startup that must fail with status 1.
fn refused(dir: &Path, config: &str, envs: &[(&str, &str)], password: &str) -> String {
    let (code, stderr) = run_to_exit(dir, config, envs);
    assert_eq!(code, 1, "{stderr}");
    assert!(!stderr.contains(password), "the password leaked: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    println!("{}", errors[0]);
    errors[0].to_owned()
}

#[test]
fn postgres_over_tls_verifies_the_server_and_never_shows_the_password() {
    let Some(server) = PgServer::start("postgres_over_tls") else {
        return;
    };
    let password = server.password.clone();
    let writer = LogWriter::open(&server.url_with_password("localhost", "sslmode=require"));
    for (i, key) in ["c-1", "c-2", "c-3"].iter().enumerate() {
        writer.full(
            "Counter",
            key,
            1,
            orlando::bincode(&CounterState {
                count: i as i64 + 10,
            }),
        );
    }

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &server.ca.ca_pem).unwrap();
    std::fs::write(dir.path().join("pg.password"), format!("{password}\n")).unwrap();

    // verify-full, the CA and the password file relative to the config file.
    let verified = config(
        dir.path(),
        &server.url("localhost", "sslmode=verify-full&sslrootcert=ca.pem"),
        "password_file = \"pg.password\"\n",
    );
    let d = Daemon::start(dir.path(), &verified);
    let replica = d.wait_for_replica("Counter", "c-3", Duration::from_secs(60), |r| {
        r["state"]["count"] == 12
    });
    assert_eq!(replica["sequence"], 1);
    let line = d.wait_for_log(&["PostgreSQL connection"], Duration::from_secs(5));
    assert!(
        line.contains("certificate and host name verified") && line.contains("TLSv1."),
        "{line}"
    );
    for path in ["/v1/plugins", "/metrics", "/v1/shards", "/", "/readyz"] {
        let body = d.get(path).body;
        assert!(!body.contains(&password), "{path} shows the password");
    }
    let exited = d.terminate();
    assert_eq!(exited.code, Some(0));
    assert!(
        !exited.stderr.iter().any(|l| l.contains(&password)),
        "a log line shows the password"
    );

    // PGPASSWORD, and verify-ca.
    let by_env = config(
        dir.path(),
        &server.url("localhost", "sslmode=verify-ca&sslrootcert=ca.pem"),
        "",
    );
    let d = Daemon::start_with_env(dir.path(), &by_env, &[("PGPASSWORD", &password)]);
    d.wait_for_replica("Counter", "c-1", Duration::from_secs(60), |r| {
        r["state"]["count"] == 10
    });
    let line = d.wait_for_log(&["PostgreSQL connection"], Duration::from_secs(5));
    assert!(line.contains("sslmode=\"verify-ca\""), "{line}");
    drop(d);

    // sqlx 0.8.6 checks the host name under verify-ca as well
    // (launchbadge/sqlx#3793), as the README says: an address the
    // certificate does not name is refused. This fails, to be noticed and
    // documented, once an upgrade makes verify-ca skip the name as libpq does.
    let url = server.url("127.0.0.1", "sslmode=verify-ca&sslrootcert=ca.pem");
    let error = refused(
        dir.path(),
        &config(dir.path(), &url, "password_file = \"pg.password\"\n"),
        &[],
        &password,
    );
    assert!(
        error.contains("TLS: invalid peer certificate: certificate not valid for name"),
        "{error}"
    );

    // A CA that did not sign the server's certificate.
    let other = TestCa::new("some other CA");
    std::fs::write(dir.path().join("other-ca.pem"), &other.ca_pem).unwrap();
    let url = server.url("localhost", "sslmode=verify-full&sslrootcert=other-ca.pem");
    let error = refused(
        dir.path(),
        &config(dir.path(), &url, "password_file = \"pg.password\"\n"),
        &[],
        &password,
    );
    let shown = url.replace(
        "other-ca.pem",
        &format!("{}%2Fother-ca.pem", encoded(dir.path())),
    );
    assert!(error.contains(&format!("log.url: log backend unavailable: {shown}: TLS: invalid peer certificate: UnknownIssuer")), "{error}");

    // The right CA, but a host name the certificate does not name.
    let url = server.url("127.0.0.1", "sslmode=verify-full&sslrootcert=ca.pem");
    let error = refused(
        dir.path(),
        &config(dir.path(), &url, "password_file = \"pg.password\"\n"),
        &[],
        &password,
    );
    assert!(
        error.contains("TLS: invalid peer certificate: certificate not valid for name"),
        "{error}"
    );

    // The password in the URL is masked in the error too.
    let url = server.url_with_password("127.0.0.1", "sslmode=verify-full&sslrootcert=ca.pem");
    let error = refused(dir.path(), &config(dir.path(), &url, ""), &[], &password);
    assert!(
        error.contains("postgres://postgres:***@127.0.0.1"),
        "{error}"
    );

    // The same server without TLS: `require` refuses it, `prefer` falls
    // back to plaintext and says so.
    server.restart(false);
    let url = server.url("localhost", "sslmode=require");
    let error = refused(
        dir.path(),
        &config(dir.path(), &url, "password_file = \"pg.password\"\n"),
        &[],
        &password,
    );
    assert!(
        error.ends_with(&format!("{url}: TLS: server does not support TLS")),
        "{error}"
    );
    let d = Daemon::start(
        dir.path(),
        &config(
            dir.path(),
            &server.url("localhost", "sslmode=prefer"),
            "password_file = \"pg.password\"\n",
        ),
    );
    let line = d.wait_for_log(&["PostgreSQL connection"], Duration::from_secs(5));
    assert!(line.contains("transport=plaintext"), "{line}");
}

/// A directory as `url` encodes a query value.
fn encoded(dir: &Path) -> String {
    url_encode(&dir.display().to_string())
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                (b as char).to_string()
            }
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn a_missing_password_file_or_tls_file_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = run_to_exit(
        dir.path(),
        &config(
            dir.path(),
            "postgres://orlando@db.invalid/x?sslmode=verify-full",
            "password_file = \"nope.password\"\n",
        ),
        &[],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("log.password_file: ") && stderr.contains("nope.password: No such file"),
        "{stderr}"
    );
    let (code, stderr) = run_to_exit(
        dir.path(),
        &config(
            dir.path(),
            "postgres://orlando@db.invalid/x?sslmode=verify-full&sslrootcert=missing-ca.pem",
            "",
        ),
        &[],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("sslrootcert ") && stderr.contains("missing-ca.pem: No such file"),
        "{stderr}"
    );
    let (code, stderr) = run_to_exit(
        dir.path(),
        &config(
            dir.path(),
            "postgres://orlando:hunter2@db.invalid/x",
            "password_file = \"pg.password\"\n",
        ),
        &[],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("log.password_file is set, but log.url holds a password too"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
