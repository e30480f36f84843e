//! A test-only plugin written straight against the contract's WIT
//! (`guest-sdk/wit`), without the SDK's encoder, as a careless or hostile
//! author could write one. The grain key picks what `decode` does:
//!
//! - `count:N`: a valid state, `{"count":N}`, encoded by hand;
//! - `list-key`: a map whose key is a list (no JSON rendering exists);
//! - `version-9`: an encoding version the host does not know;
//! - `forge`: logs and fails with text that tries to forge log lines
//!   (`\n`) and to reorder what a reader sees (a bidi override);
//! - `huge:MIB`: returns a real buffer of MIB mebibytes and one byte;
//! - `lie`: returns a buffer whose declared length runs past memory;
//! - `alias:N`: logs one 16 MiB string N times (aliases of one buffer).
//! - `amplify:LEN:N`: a list of N unit variants that all refer to one
//!   interned LEN-byte name: small encoded, huge as JSON.

wit_bindgen::generate!({
    path: "../../../guest-sdk/wit",
    world: "plugin",
});

use exports::replica::plugin::decoder::{Guest, PluginInfo};
use replica::plugin::logging::{Level, log};
use replica::plugin::types::{DecodeError, ErrorKind, Snapshot};

/// Decodes according to the grain key (see the crate docs).
pub struct RawOutput;

fn rejected(message: &str) -> DecodeError {
    DecodeError {
        kind: ErrorKind::Rejected,
        message: message.into(),
    }
}

/// `{"count": n}` in the replica value encoding, written by hand.
fn counter(n: i64) -> Vec<u8> {
    let mut out = vec![1, 0x0C, 1, 5];
    out.extend(b"count");
    out.push(0x03);
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
    out.push(0);
    out
}

impl Guest for RawOutput {
    fn describe() -> PluginInfo {
        PluginInfo {
            grain_type: "Raw".into(),
            schema_name: "Raw\u{202E}Schema\nforged".into(),
            schema_version: "1".into(),
            sdk_version: "none".into(),
            state_versions: vec!["1".into()],
        }
    }

    fn decode(snapshot: Snapshot) -> Result<Vec<u8>, DecodeError> {
        let key = snapshot.grain_key.as_str();
        let (mode, arg) = key.split_once(':').unwrap_or((key, ""));
        match mode {
            "count" => Ok(counter(arg.parse().map_err(|_| rejected("bad count"))?)),
            // A map (0x0D) whose only key is an empty list (0x0B 0xFF), with
            // a unit value (0x00), then the map's end (0xFF).
            "list-key" => Ok(vec![1, 0x0D, 0x0B, 0xFF, 0x00, 0xFF]),
            "version-9" => Ok(vec![9, 0x00]),
            "forge" => {
                log(
                    Level::Error,
                    "first line\n2026-01-01T00:00:00Z ERROR FORGED by the plugin \u{202E}desrever",
                );
                Err(rejected(
                    "refused\n2026-01-01T00:00:00Z ERROR FORGED reason \u{202E}desrever",
                ))
            }
            "huge" => {
                let mib: usize = arg.parse().map_err(|_| rejected("bad size"))?;
                Ok(vec![7u8; (mib << 20) + 1])
            }
            "lie" => {
                let mut small = std::mem::ManuallyDrop::new(vec![1u8, 0x00]);
                // SAFETY: none; this plugin is hostile on purpose. The host
                // must refuse the declared length before reading past memory.
                Ok(unsafe { Vec::from_raw_parts(small.as_mut_ptr(), 3 << 30, 3 << 30) })
            }
            "alias" => {
                let times: usize = arg.parse().map_err(|_| rejected("bad count"))?;
                let big = "x".repeat(16 << 20);
                for _ in 0..times {
                    log(Level::Info, &big);
                }
                Ok(counter(times as i64))
            }
            "amplify" => {
                let (len, times) = arg.split_once(':').ok_or_else(|| rejected("bad amplify"))?;
                let len: usize = len.parse().map_err(|_| rejected("bad length"))?;
                let times: usize = times.parse().map_err(|_| rejected("bad count"))?;
                // Version, a sequence, a unit variant defining the name
                // (new-name 1, its varint length, its bytes), then N - 1
                // references to name index 0 (2), and the sequence's end.
                let mut out = vec![1u8, 0x0B, 0x0E, 1];
                let mut n = len;
                while n >= 0x80 {
                    out.push((n as u8) | 0x80);
                    n >>= 7;
                }
                out.push(n as u8);
                out.extend(std::iter::repeat_n(b'n', len));
                for _ in 1..times {
                    out.extend([0x0E, 2]);
                }
                out.push(0xFF);
                Ok(out)
            }
            _ => Err(rejected("unknown mode")),
        }
    }
}

#[cfg(target_arch = "wasm32")]
export!(RawOutput);
