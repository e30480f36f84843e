//! Ready decoders for the payload formats Orlando writes.

use serde::de::DeserializeOwned;

use crate::DecodeError;

/// Decodes an Orlando default payload: bincode 2 with `config::standard()`
/// through serde. Trailing bytes after the value are refused, since they mean
/// the payload was written with another state layout.
///
/// A length in the payload is trusted only as far as the payload's size
/// allows: decoding may claim at most 16 times the payload's size in memory
/// (rounded up to a tier), so a corrupt length prefix is a malformed payload,
/// never a huge allocation that traps the plugin.
pub fn bincode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    // Every value bincode decodes consumes at least one byte of the payload
    // and claims at most 16 (an i128); strings and bytes claim their length.
    // So a valid payload never claims more than 16 times its size.
    let (value, read) = match payload.len() {
        0..=0x1000 => decode_limited::<T, { 64 << 10 }>(payload),
        0x1001..=0x4_0000 => decode_limited::<T, { 4 << 20 }>(payload),
        0x4_0001..=0x40_0000 => decode_limited::<T, { 64 << 20 }>(payload),
        _ => decode_limited::<T, { 1 << 30 }>(payload),
    }
    .map_err(|e| match e {
        bincode::error::DecodeError::LimitExceeded => DecodeError::malformed(format!(
            "bincode: a length in the payload claims more memory than a {}-byte payload can hold",
            payload.len()
        )),
        e => DecodeError::malformed(format!("bincode: {e}")),
    })?;
    if read != payload.len() {
        return Err(DecodeError::malformed(format!(
            "bincode: {} trailing bytes after the state ({} of {} bytes used)",
            payload.len() - read,
            read,
            payload.len()
        )));
    }
    Ok(value)
}

fn decode_limited<T: DeserializeOwned, const LIMIT: usize>(
    payload: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    bincode::serde::decode_from_slice(payload, bincode::config::standard().with_limit::<LIMIT>())
}

/// Decodes a `serde_json::to_vec` payload.
pub fn json<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(payload).map_err(|e| DecodeError::malformed(format!("json: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct S {
        a: i64,
        b: String,
    }

    #[test]
    fn bincode_round_trip_and_errors() {
        let s = S {
            a: -5,
            b: "x".into(),
        };
        let bytes = bincode::serde::encode_to_vec(&s, bincode::config::standard()).unwrap();
        assert_eq!(super::bincode::<S>(&bytes).unwrap(), s);

        let err = super::bincode::<S>(&[]).unwrap_err();
        assert_eq!(err.kind, crate::ErrorKind::MalformedPayload);

        // A string claiming 2^40 bytes in a 12-byte payload.
        let mut huge = vec![0x02, 0xfd];
        huge.extend((1u64 << 40).to_le_bytes());
        huge.extend(b"ab");
        let err = super::bincode::<S>(&huge).unwrap_err();
        assert_eq!(err.kind, crate::ErrorKind::MalformedPayload);
        assert!(err.message.contains("claims more memory"), "{err}");
        // Lengths that fit are fine at every size tier.
        for len in [0usize, 5000, 300_000, 5_000_000] {
            let s = S {
                a: 1,
                b: "é".repeat(len / 2),
            };
            let bytes = bincode::serde::encode_to_vec(&s, bincode::config::standard()).unwrap();
            assert_eq!(super::bincode::<S>(&bytes).unwrap(), s);
        }

        let mut longer = bytes.clone();
        longer.push(0);
        let err = super::bincode::<S>(&longer).unwrap_err();
        assert!(err.message.contains("1 trailing bytes"), "{err}");
    }

    #[test]
    fn json_errors_are_malformed() {
        let err = json::<S>(b"{\"a\":1}").unwrap_err();
        assert_eq!(err.kind, crate::ErrorKind::MalformedPayload);
        assert!(err.message.contains("missing field `b`"), "{err}");
        assert_eq!(
            json::<S>(br#"{"a":1,"b":"q"}"#).unwrap(),
            S {
                a: 1,
                b: "q".into()
            }
        );
    }
}
