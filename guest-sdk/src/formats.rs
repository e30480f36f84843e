//! Ready decoders for the payload formats Orlando writes.

use serde::de::DeserializeOwned;

use crate::DecodeError;

/// Decodes an Orlando default payload: bincode 2 with `config::standard()`
/// through serde. Trailing bytes after the value are refused, since they mean
/// the payload was written with another state layout.
pub fn bincode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    let (value, read) = bincode::serde::decode_from_slice(payload, bincode::config::standard())
        .map_err(|e| DecodeError::malformed(format!("bincode: {e}")))?;
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
