//! Test helper: holds exclusive POSIX locks on the WAL read-mark bytes of an
//! SQLite database's `-shm` file, so that no other process can start a read
//! transaction (a writer's transaction, even `BEGIN EXCLUSIVE`, never blocks
//! readers in WAL mode; this does). Prints `locked` once it holds them and
//! keeps them until its standard input closes.
//!
//! A separate process on purpose: POSIX locks belong to a process, and a
//! lock taken inside the test process would neither block that process's
//! own connections nor survive SQLite closing a descriptor of the file.
//!
//! Usage: `hold-wal-read-locks DATABASE`

use std::io::{Read, Write};
use std::os::fd::AsRawFd;

/// `WALINDEX_LOCK_OFFSET + 3`: the first of SQLite's `WAL_NREADER` (5)
/// read-mark lock bytes in the `-shm` file.
const READ_MARKS: libc::off_t = 123;
const READ_MARK_COUNT: libc::off_t = 5;

fn main() {
    let db = std::env::args()
        .nth(1)
        .expect("usage: hold-wal-read-locks DATABASE");
    let shm = format!("{db}-shm");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&shm)
        .unwrap_or_else(|e| panic!("{shm}: {e}"));
    let lock = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: READ_MARKS,
        l_len: READ_MARK_COUNT,
        l_pid: 0,
    };
    // Readers in flight hold read marks for a moment: wait for them.
    loop {
        // SAFETY: a valid descriptor and a valid `flock` for F_SETLK.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &lock) } == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    println!("locked");
    std::io::stdout().flush().expect("stdout");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}
