//! Fuzzing that runs on stable Rust (cargo-fuzz needs nightly): random
//! inputs from a seeded generator, shaped with `arbitrary`, against three
//! properties.
//!
//! 1. Payloads through the sample plugins (raw bytes, and valid payloads
//!    mutated): the host never panics, the plugin never faults (no trap,
//!    timeout, out-of-memory or bad output: bad input is a typed decode
//!    error), and what decodes renders as valid JSON. Valid payloads decode
//!    to exactly serde_json's rendering of the state.
//! 2. Arbitrary buffers through the host's validator
//!    (`replica_host::State::validate`, under random limits) and JSON
//!    rendering: random bytes, random tag streams and mutated valid
//!    encodings. Never a panic; what validates renders, what renders is
//!    valid JSON, and the `Value` tree renders the same.
//! 3. Arbitrary Rust values through the SDK's encoder, the validator and
//!    the rendering: the JSON equals `serde_json::to_string` of the value.
//!
//! The default test run does a short smoke run (about a second per target).
//! A longer run, e.g. five minutes per target:
//!
//! ```sh
//! REPLICA_FUZZ_SECS=300 cargo test -p replica-e2e --test fuzz -- --nocapture
//! ```
//!
//! `REPLICA_FUZZ_SEED=N` picks the run's seed (default: the clock). A failure
//! prints the iteration's seed; `REPLICA_FUZZ_REPLAY=SEED` runs just that
//! input again.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use replica_e2e::orlando::{self, CounterState, UserProfile};
use replica_guest::encoding::tag;
use replica_host::{LoadedPlugin, PluginEngine, PluginLimits, SnapshotRef};
use replica_host::{OutputLimits, State};
use serde::Serialize;

/// A splitmix64 generator: the fuzzer's only source of randomness.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Runs `target` on fresh random input until the time budget is spent (or
/// once, on the replayed seed); panics naming the failing iteration's seed.
fn fuzz(name: &str, mut target: impl FnMut(&mut Unstructured) -> arbitrary::Result<()>) {
    let budget = Duration::from_secs(env_u64("REPLICA_FUZZ_SECS").unwrap_or(1));
    let replay = env_u64("REPLICA_FUZZ_REPLAY");
    let seed = env_u64("REPLICA_FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut seeds = SplitMix(seed);
    let started = Instant::now();
    let mut iterations = 0u64;
    while replay.is_some() && iterations == 0 || replay.is_none() && started.elapsed() < budget {
        let input_seed = replay.unwrap_or_else(|| seeds.next());
        let mut input = SplitMix(input_seed);
        let len = (input.next() % 4096) as usize;
        let bytes = input.bytes(len);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let _ = target(&mut Unstructured::new(&bytes));
        }));
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!(
                "fuzz target {name} failed on iteration {iterations}: {message}\n\
                 replay with REPLICA_FUZZ_REPLAY={input_seed}"
            );
        }
        iterations += 1;
    }
    println!(
        "fuzz {name}: {iterations} inputs in {:.1} s (seed {seed})",
        started.elapsed().as_secs_f64()
    );
    assert!(iterations > 0);
}

// ---------------------------------------------------------------------------
// 1. Payloads through the sample plugins

struct Samples {
    counter: LoadedPlugin,
    bank: LoadedPlugin,
    users: LoadedPlugin,
}

fn samples() -> &'static Samples {
    static SAMPLES: OnceLock<Samples> = OnceLock::new();
    SAMPLES.get_or_init(|| {
        let engine = PluginEngine::new().unwrap();
        let load = |name: &str| {
            LoadedPlugin::load(&engine, &replica_e2e::plugin(name), PluginLimits::default())
                .unwrap()
        };
        Samples {
            counter: load("counter-plugin"),
            bank: load("bank-account-plugin"),
            users: load("user-profile-plugin"),
        }
    })
}

fn account(u: &mut Unstructured) -> arbitrary::Result<orlando::AccountState> {
    let mut account = orlando::sample_account(u.int_in_range(0..=5)?);
    account.owner = String::arbitrary(u)?;
    account.balance_cents = i64::arbitrary(u)?;
    account.frozen = bool::arbitrary(u)?;
    account.tags = Vec::<String>::arbitrary(u)?;
    if bool::arbitrary(u)? {
        account.last_transaction = None;
    }
    Ok(account)
}

/// Damages a valid payload the way a wrong layout or a torn write would.
fn mutate(u: &mut Unstructured, mut payload: Vec<u8>) -> arbitrary::Result<Vec<u8>> {
    for _ in 0..u.int_in_range(1..=4)? {
        let at = if payload.is_empty() {
            0
        } else {
            u.choose_index(payload.len())?
        };
        match u.int_in_range(0..=5)? {
            0 if !payload.is_empty() => payload[at] ^= 1 << u.int_in_range(0..=7)?,
            1 => payload.truncate(at),
            2 => payload.insert(at, u8::arbitrary(u)?),
            // bincode's varint markers: a huge length or number follows.
            3 if !payload.is_empty() => payload[at] = *u.choose(&[0xfb, 0xfc, 0xfd, 0xfe, 0xff])?,
            4 => payload.extend(std::iter::repeat_n(0xff, u.int_in_range(1..=16)?)),
            _ if !payload.is_empty() => payload[at] = u8::arbitrary(u)?,
            _ => payload.push(u8::arbitrary(u)?),
        }
    }
    Ok(payload)
}

fn decode(plugin: &LoadedPlugin, grain_type: &str, payload: &[u8]) -> Result<String, String> {
    let snapshot = SnapshotRef {
        grain_type,
        grain_key: "fuzz",
        sequence: 1,
        timestamp_millis: 0,
        source_cluster: "fuzz",
        payload,
    };
    match plugin.decode(snapshot) {
        Ok(value) => {
            let json = value.to_json().expect("a decoded value renders");
            serde_json::from_str::<serde_json::Value>(&json).expect("rendered JSON is valid");
            Ok(json)
        }
        Err(e) => {
            assert!(
                !e.kind.is_guest_fault(),
                "{grain_type}: the plugin faulted on a {}-byte payload {:02x?}: {e}",
                payload.len(),
                &payload[..payload.len().min(64)]
            );
            Err(e.to_string())
        }
    }
}

#[test]
fn fuzz_payloads_through_the_sample_plugins() {
    let s = samples();
    fuzz("payloads", |u| {
        let which = u.int_in_range(0..=2)?;
        let raw = bool::arbitrary(u)?;
        let (plugin, grain_type, valid, expected) = match which {
            0 => {
                let state = CounterState {
                    count: i64::arbitrary(u)?,
                };
                (
                    &s.counter,
                    "Counter",
                    orlando::bincode(&state),
                    serde_json::to_string(&state).unwrap(),
                )
            }
            1 => {
                let state = account(u)?;
                (
                    &s.bank,
                    "BankAccount",
                    orlando::bincode(&state),
                    serde_json::to_string(&state).unwrap(),
                )
            }
            _ => {
                let state = UserProfile {
                    name: String::arbitrary(u)?,
                    email: String::arbitrary(u)?,
                    visits: u32::arbitrary(u)?,
                    roles: Vec::<String>::arbitrary(u)?,
                };
                (
                    &s.users,
                    "UserProfile",
                    orlando::json(&state),
                    serde_json::to_string(&state).unwrap(),
                )
            }
        };
        if raw {
            let payload = Vec::<u8>::arbitrary(u)?;
            let _ = decode(plugin, grain_type, &payload);
        } else if bool::arbitrary(u)? {
            assert_eq!(decode(plugin, grain_type, &valid), Ok(expected));
        } else {
            let payload = mutate(u, valid)?;
            let _ = decode(plugin, grain_type, &payload);
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------
// 2. Arbitrary buffers through the validator and rendering

/// A buffer that is mostly tags, varints and short strings, so that it gets
/// past the first bytes often and reaches the validator's deeper paths.
fn tag_stream(u: &mut Unstructured) -> arbitrary::Result<Vec<u8>> {
    let mut buf = vec![if u.ratio(1, 16)? {
        u8::arbitrary(u)?
    } else {
        1
    }];
    for _ in 0..u.int_in_range(0..=64)? {
        match u.int_in_range(0..=5)? {
            0 => buf.push(*u.choose(&[
                tag::UNIT,
                tag::FALSE,
                tag::TRUE,
                tag::NONE,
                tag::SOME,
                tag::SEQ,
                tag::STRUCT,
                tag::MAP,
                tag::END,
                tag::UNIT_VARIANT,
                tag::VARIANT,
            ])?),
            1 => {
                buf.push(*u.choose(&[tag::SIGNED, tag::UNSIGNED])?);
                replica_guest::encoding::write_varint(&mut buf, u64::arbitrary(u)?);
            }
            2 => {
                let text = String::arbitrary(u)?;
                buf.push(tag::STRING);
                replica_guest::encoding::write_varint(&mut buf, text.len() as u64);
                buf.extend(text.as_bytes());
            }
            3 => {
                // A name-ref: end of struct, a new name, or an index.
                let r = u.int_in_range(0..=4)?;
                buf.push(r);
                if r == 1 {
                    let name = String::arbitrary(u)?;
                    buf.push(name.len() as u8);
                    buf.extend(name.as_bytes());
                }
            }
            4 => {
                buf.push(*u.choose(&[tag::F32, tag::F64])?);
                let len = u.int_in_range(0..=8)?;
                buf.extend(u.bytes(len)?);
            }
            _ => buf.push(u8::arbitrary(u)?),
        }
    }
    Ok(buf)
}

#[test]
fn fuzz_buffers_through_the_validator_and_rendering() {
    fuzz("buffers", |u| {
        let buf = match u.int_in_range(0..=2)? {
            0 => Vec::arbitrary(u)?,
            1 => tag_stream(u)?,
            _ => {
                let value = rich(u, 3)?;
                let mut buf = replica_guest::encoding::to_bytes(&value).expect("encodes");
                for _ in 0..u.int_in_range(1..=3)? {
                    let at = u.choose_index(buf.len())?;
                    buf[at] = u8::arbitrary(u)?;
                }
                buf
            }
        };
        let limits = if bool::arbitrary(u)? {
            OutputLimits::default()
        } else {
            OutputLimits {
                max_nodes: u.int_in_range(0..=64)?,
                max_depth: u.int_in_range(0..=12)?,
                max_bytes: u.int_in_range(0..=256)?,
                max_rendered_bytes: u.int_in_range(0..=2048)?,
            }
        };
        if let Ok(state) = State::validate(&buf, &limits) {
            let json = state
                .to_json()
                .unwrap_or_else(|e| panic!("a validated state does not render: {e}: {buf:?}"));
            serde_json::from_str::<serde_json::Value>(&json)
                .unwrap_or_else(|e| panic!("invalid JSON {json}: {e}"));
            assert!(
                json.len() as u64 <= limits.max_rendered_bytes,
                "{} bytes of JSON passed a rendered limit of {}: {buf:?}",
                json.len(),
                limits.max_rendered_bytes
            );
            assert_eq!(state.to_value().to_json().ok(), Some(json), "{buf:?}");
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------
// 3. Rust values: SDK encoder, validation and rendering against serde_json

#[derive(Debug, Serialize)]
enum Rich {
    Unit,
    Bool(bool),
    Signed(i64),
    Small(i8),
    Unsigned(u64),
    Float(f64),
    Single(f32),
    Char(char),
    Text(String),
    Bytes(Vec<u8>),
    Maybe(Option<Box<Rich>>),
    List(Vec<Rich>),
    Pair(Box<Rich>, u16),
    Record {
        name: String,
        inner: Box<Rich>,
        flag: Option<bool>,
    },
    ByName(BTreeMap<String, Rich>),
    ByNumber(BTreeMap<i32, Rich>),
    Empty {},
    Nothing(()),
}

fn rich(u: &mut Unstructured, depth: u32) -> arbitrary::Result<Rich> {
    let leaf = depth == 0 || u.ratio(1, 3)?;
    let choice = if leaf {
        u.int_in_range(0..=9)?
    } else {
        u.int_in_range(10..=17)?
    };
    let d = depth.saturating_sub(1);
    Ok(match choice {
        0 => Rich::Unit,
        1 => Rich::Bool(bool::arbitrary(u)?),
        2 => Rich::Signed(i64::arbitrary(u)?),
        3 => Rich::Small(i8::arbitrary(u)?),
        4 => Rich::Unsigned(u64::arbitrary(u)?),
        5 => Rich::Float(f64::arbitrary(u)?),
        6 => Rich::Single(f32::arbitrary(u)?),
        7 => Rich::Char(char::arbitrary(u)?),
        8 => Rich::Text(String::arbitrary(u)?),
        9 => Rich::Bytes(Vec::arbitrary(u)?),
        10 => Rich::Maybe(if bool::arbitrary(u)? {
            Some(Box::new(rich(u, d)?))
        } else {
            None
        }),
        11 => Rich::List(
            (0..u.int_in_range(0..=4)?)
                .map(|_| rich(u, d))
                .collect::<arbitrary::Result<_>>()?,
        ),
        12 => Rich::Pair(Box::new(rich(u, d)?), u16::arbitrary(u)?),
        13 => Rich::Record {
            name: String::arbitrary(u)?,
            inner: Box::new(rich(u, d)?),
            flag: Option::arbitrary(u)?,
        },
        14 => Rich::ByName(
            (0..u.int_in_range(0..=3)?)
                .map(|_| Ok((String::arbitrary(u)?, rich(u, d)?)))
                .collect::<arbitrary::Result<_>>()?,
        ),
        15 => Rich::ByNumber(
            (0..u.int_in_range(0..=3)?)
                .map(|_| Ok((i32::arbitrary(u)?, rich(u, d)?)))
                .collect::<arbitrary::Result<_>>()?,
        ),
        16 => Rich::Empty {},
        _ => Rich::Nothing(()),
    })
}

#[test]
fn fuzz_rust_values_render_exactly_like_serde_json() {
    fuzz("rust values", |u| {
        let value = rich(u, 4)?;
        let expected = serde_json::to_string(&value);
        let bytes = replica_guest::encoding::to_bytes(&value)
            .unwrap_or_else(|e| panic!("the SDK cannot encode {value:?}: {e}"));
        // What serde_json cannot render, the host must refuse.
        match (State::validate(&bytes, &OutputLimits::default()), expected) {
            (Ok(state), Ok(expected)) => {
                assert_eq!(state.to_json().unwrap(), expected, "{value:?}");
                assert_eq!(state.to_value().to_json().unwrap(), expected, "{value:?}");
            }
            (Err(_), Err(_)) => {}
            (got, expected) => panic!("{value:?}: host {got:?}, serde_json {expected:?}"),
        }
        Ok(())
    });
}
