//! A PostgreSQL server of the test's own: `initdb` into a temporary
//! directory, started on a free port with TLS on (a CA and a server
//! certificate made here) and password (SCRAM) authentication over TCP.
//!
//! PostgreSQL refuses to run as root: as root, `initdb` and `pg_ctl` run as
//! the `postgres` user (`runuser`), which owns the directory. Where no
//! PostgreSQL binaries are installed, [`PgServer::start`] returns `None`
//! after a `SKIPPED:` line, or panics when PostgreSQL is required (`CI`,
//! `REPLICA_REQUIRE_POSTGRES=1`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use crate::pg::postgres_required;

/// A CA and what it signed, as PEM.
pub struct TestCa {
    /// The CA's certificate.
    pub ca_pem: String,
    /// The server's certificate, for `localhost` only.
    pub server_pem: String,
    /// The server's private key.
    pub server_key_pem: String,
}

impl TestCa {
    /// A fresh CA named `name`, and a server certificate it signed for the
    /// DNS name `localhost` (not for `127.0.0.1`).
    pub fn new(name: &str) -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, name);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let key = KeyPair::generate().unwrap();
        let server = params.signed_by(&key, &ca).unwrap();
        Self {
            ca_pem: ca.pem(),
            server_pem: server.pem(),
            server_key_pem: key.serialize_pem(),
        }
    }
}

/// A running PostgreSQL server; stopped (and its files removed) on drop.
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    listen: String,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// The `postgres` superuser's password.
    pub password: String,
    /// The CA that signed its certificate.
    pub ca: TestCa,
}

fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `program args…`, as the `postgres` user when we are root.
fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn run(mut cmd: Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PgServer {
    /// Makes and starts a server with TLS on; `None` (after a `SKIPPED:`
    /// line) where PostgreSQL is not installed and not required.
    pub fn start(test: &str) -> Option<Self> {
        Self::start_on(test, "127.0.0.1", &[])
    }

    /// Like [`PgServer::start`], listening on `listen_addresses` (as in
    /// `postgresql.conf`, e.g. `*`) and taking password logins from the
    /// `networks` (CIDR) too.
    pub fn start_on(test: &str, listen_addresses: &str, networks: &[&str]) -> Option<Self> {
        let Some(bin) = bin_dir() else {
            assert!(
                !postgres_required(),
                "{test}: no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"
            );
            println!("SKIPPED: {test}: no PostgreSQL server binaries (apt-get install postgresql)");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("replica-pg-")
            .tempdir_in("/tmp")
            .unwrap();
        let data = dir.path().join("data");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let password = format!("pw-{}-{nanos:x}", std::process::id());
        std::fs::write(dir.path().join("pwfile"), format!("{password}\n")).unwrap();
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["-R", "postgres:postgres"]).arg(dir.path());
                    c
                },
                "chown",
            );
        }
        let mut initdb = as_server_user(&bin.join("initdb"));
        initdb
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
            ])
            .arg(format!("--pwfile={}", dir.path().join("pwfile").display()));
        run(initdb, "initdb");
        let mut hba = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("pg_hba.conf"))
            .unwrap();
        for network in networks {
            std::io::Write::write_all(
                &mut hba,
                format!("host all all {network} scram-sha-256\n").as_bytes(),
            )
            .unwrap();
        }
        drop(hba);
        let ca = TestCa::new("replica-host test CA");
        for (name, text) in [
            ("server.crt", &ca.server_pem),
            ("server.key", &ca.server_key_pem),
        ] {
            let path = data.join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            if is_root() {
                run(
                    {
                        let mut c = Command::new("chown");
                        c.arg("postgres:postgres").arg(&path);
                        c
                    },
                    "chown",
                );
            }
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = Self {
            dir,
            bin,
            listen: listen_addresses.to_owned(),
            port,
            password,
            ca,
        };
        server.pg_ctl_start(true);
        Some(server)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl_start(&self, tls: bool) {
        let mut cmd = as_server_user(&self.bin.join("pg_ctl"));
        cmd.arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-p {} -k {} -c listen_addresses='{}' -c ssl={} -c fsync=off",
                self.port,
                self.dir.path().display(),
                self.listen,
                if tls { "on" } else { "off" }
            ))
            .arg("start");
        run(cmd, "pg_ctl start");
    }

    /// Restarts the server with TLS on or off.
    pub fn restart(&self, tls: bool) {
        self.stop();
        self.pg_ctl_start(tls);
    }

    fn stop(&self) {
        let mut cmd = as_server_user(&self.bin.join("pg_ctl"));
        cmd.arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "stop"]);
        let _ = cmd.output();
    }

    /// `postgres://postgres@HOST:PORT/postgres?QUERY` (no password).
    pub fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{query}", self.port)
    }

    /// Like [`PgServer::url`], with the password in it.
    pub fn url_with_password(&self, host: &str, query: &str) -> String {
        format!(
            "postgres://postgres:{}@{host}:{}/postgres?{query}",
            self.password, self.port
        )
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}
