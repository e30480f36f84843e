//! A test-only plugin for grain type `Misbehave`. The payload, read as text,
//! says how to misbehave; any other payload decodes as a bincode
//! `CounterState`, like the `counter` sample.
//!
//! | payload       | behaviour                                          |
//! |---------------|----------------------------------------------------|
//! | `panic`       | panics with a message naming the grain             |
//! | `loop`        | loops forever                                      |
//! | `spin:N`      | spins N million iterations, then decodes `count: N` |
//! | `grow`        | allocates 1 MiB at a time without bound            |
//! | `huge`        | makes one 1 GiB allocation                         |
//! | `recurse`     | recurses until the stack overflows                 |
//! | `error`       | returns a `rejected` error                         |
//! | `wide:N`      | returns a list of N numbers                        |
//! | `deep:N`      | returns N nested single-element lists              |
//! | `remember:S`  | returns every `remember` payload this instance saw |
//! | `echo:S`      | returns S, the rest of the payload, as a string     |
//! | `text:N`      | returns a string of N bytes made in the guest       |

use std::sync::Mutex;

use replica_guest::{DecodeError, Plugin, Snapshot};
use serde::{Deserialize, Serialize};

/// The state of a well-behaved call.
#[derive(Debug, Serialize, Deserialize)]
pub struct CounterState {
    /// The counter's value.
    pub count: i64,
}

/// Nested lists of configurable depth.
#[derive(Serialize)]
pub struct Nest(Vec<Nest>);

/// The state returned by the misbehaving variants.
#[derive(Serialize)]
#[serde(untagged)]
pub enum State {
    /// A normal counter.
    Counter(CounterState),
    /// A list of numbers.
    Wide(Vec<u64>),
    /// Nested lists.
    Deep(Nest),
    /// Payloads seen by this instance.
    Seen(Vec<String>),
    /// A string.
    Text(String),
}

static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The misbehaving plugin.
pub struct Misbehave;

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64, buf: &mut [u8; 256]) -> u64 {
    buf[(depth % 256) as usize] = depth as u8;
    let mut next = [0u8; 256];
    next[0] = buf[0];
    recurse(depth + 1, &mut next) + u64::from(next[1])
}

fn number(arg: &str) -> Result<u64, DecodeError> {
    arg.parse()
        .map_err(|_| DecodeError::malformed(format!("not a number: {arg}")))
}

impl Plugin for Misbehave {
    const GRAIN_TYPE: &'static str = "Misbehave";
    const SCHEMA_NAME: &'static str = "CounterState";
    const SCHEMA_VERSION: &'static str = "1";
    type State = State;

    fn decode(snapshot: &Snapshot) -> Result<State, DecodeError> {
        let text = std::str::from_utf8(&snapshot.payload).unwrap_or("");
        let (command, arg) = text.split_once(':').unwrap_or((text, ""));
        match command {
            "panic" => panic!("deliberate panic for grain {}", snapshot.grain_key),
            "loop" => loop {
                std::hint::black_box(());
            },
            "spin" => {
                let n = number(arg)?;
                let mut x = 0u64;
                for i in 0..n * 1_000_000 {
                    x = std::hint::black_box(x.wrapping_add(i));
                }
                std::hint::black_box(x);
                Ok(State::Counter(CounterState { count: n as i64 }))
            }
            "grow" => {
                let mut hog: Vec<Vec<u8>> = Vec::new();
                loop {
                    hog.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hog);
                }
            }
            "huge" => {
                let v = std::hint::black_box(vec![1u8; 1 << 30]);
                Ok(State::Wide(vec![u64::from(v[v.len() - 1])]))
            }
            "recurse" => {
                let mut buf = [0u8; 256];
                Ok(State::Wide(vec![recurse(0, &mut buf)]))
            }
            "error" => Err(DecodeError::rejected("refuses every payload")),
            "wide" => Ok(State::Wide((0..number(arg)?).collect())),
            "deep" => {
                let mut nest = Nest(Vec::new());
                for _ in 0..number(arg)? {
                    nest = Nest(vec![nest]);
                }
                Ok(State::Deep(nest))
            }
            "remember" => {
                let mut seen = SEEN.lock().unwrap();
                seen.push(arg.to_string());
                Ok(State::Seen(seen.clone()))
            }
            "echo" => {
                // The payload is not copied as text: `arg` borrows it.
                Ok(State::Text(arg.to_string()))
            }
            "text" => Ok(State::Text("x".repeat(number(arg)? as usize))),
            _ => replica_guest::formats::bincode(&snapshot.payload).map(State::Counter),
        }
    }
}

replica_guest::export_plugin!(Misbehave);
