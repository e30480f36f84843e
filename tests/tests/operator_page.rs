//! The operator page in a real browser: headless Chromium renders `GET /`
//! of a real `replica-host run` (with access control on, the token sent as
//! HTTP Basic's password) and the failing grain is in the rendered DOM.
//! Skips, saying so, only where no Chromium is installed; `.ci/run`
//! installs it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use replica_e2e::daemon::{self, Daemon};
use replica_e2e::log_writer::LogWriter;
use replica_e2e::orlando::{self, CounterState};
use sha2::{Digest, Sha256};

const WAIT: Duration = Duration::from_secs(60);
const TOKEN: &str = "operator-token-31337";

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            let out = Command::new("sh")
                .args(["-c", &format!("command -v {name}")])
                .output()
                .ok()?;
            let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
        })
}

/// Runs headless Chromium on `url` with `mode` (`--dump-dom`, `--screenshot=…`).
fn browse(chromium: &Path, profile: &Path, url: &str, mode: &str) -> String {
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1280,900",
            &format!("--user-data-dir={}", profile.display()),
            mode,
            url,
        ])
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_real_browser_renders_the_operator_page_with_the_failing_grain() {
    let Some(chromium) = chromium() else {
        eprintln!("SKIPPED: no chromium installed (.ci/run installs Debian's `chromium`)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("log.db").display());
    let writer = LogWriter::open(&url);
    writer.full(
        "Counter",
        "healthy",
        1,
        orlando::bincode(&CounterState { count: 1 }),
    );
    writer.full(
        "Counter",
        "broken <b>grain</b>",
        1,
        orlando::bincode(&CounterState { count: 1 }),
    );
    writer.full("Counter", "broken <b>grain</b>", 2, vec![0xff, 0xff]);
    writer.full(
        "Counter",
        "lagging",
        1,
        orlando::bincode(&CounterState { count: 1 }),
    );
    writer.delta("Counter", "lagging", 2);
    std::fs::write(
        dir.path().join("tokens"),
        format!("{} read\n", hex::encode(Sha256::digest(TOKEN.as_bytes()))),
    )
    .unwrap();
    let config = daemon::config(
        &url,
        &daemon::plugins(
            dir.path(),
            &[
                ("Counter", "counter-plugin"),
                ("BankAccount", "bank-account-plugin"),
            ],
        ),
    )
    .replace(
        "listen = \"127.0.0.1:0\"\n",
        "listen = \"127.0.0.1:0\"\nauth = { token_files = [\"tokens\"] }\n",
    );
    let d = Daemon::start(dir.path(), &config);
    let bearer = format!("Bearer {TOKEN}");
    d.wait_for_log(&["broken <b>grain</b>"], WAIT);
    let deadline = std::time::Instant::now() + WAIT;
    while !d
        .get_with("/", &[("Authorization", &bearer)])
        .body
        .contains("lagging")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the page never listed the grains"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(d.get("/").status, 401, "the page is protected like the API");

    let profile = dir.path().join("chromium-profile");
    let page = format!("http://operator:{TOKEN}@127.0.0.1:{}/", d.addr.port());
    let dom = browse(&chromium, &profile, &page, "--dump-dom");
    assert!(
        dom.contains("id=\"problems\""),
        "no problems table in:\n{dom}"
    );
    let row = dom
        .split("<tr")
        .find(|row| row.contains("broken &lt;b&gt;grain&lt;/b&gt;"))
        .unwrap_or_else(|| panic!("the failing grain is not listed (escaped) in:\n{dom}"));
    assert!(row.contains("failing"), "{row}");
    assert!(
        row.contains("malformed_payload"),
        "the reason is shown: {row}"
    );
    assert!(row.contains(">2<"), "the failing sequence is shown: {row}");
    assert!(!dom.contains("<b>grain</b>"), "grain keys are escaped");
    let lagging = dom
        .split("<tr")
        .find(|row| row.contains("lagging"))
        .unwrap();
    assert!(lagging.contains("behind"), "{lagging}");
    assert!(
        dom.contains("http-equiv=\"refresh\""),
        "the page refreshes itself"
    );
    assert!(dom.contains("id=\"plugins\"") && dom.contains("BankAccount"));
    assert!(!dom.contains("<script"), "no JavaScript");

    // A picture for people: REPLICA_SCREENSHOT names where to keep it.
    let png = dir.path().join("operator-page.png");
    browse(
        &chromium,
        &profile,
        &page,
        &format!("--screenshot={}", png.display()),
    );
    let bytes = std::fs::read(&png).expect("a screenshot");
    assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
    if let Some(keep) = std::env::var_os("REPLICA_SCREENSHOT") {
        std::fs::copy(&png, keep).unwrap();
    }
}
