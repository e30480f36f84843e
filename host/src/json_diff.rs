//! Where two JSON values differ, as field paths a reader can follow:
//! `.owner: expected "Zoë", got "Zoe"`. Pure: no I/O.

use serde_json::Value;

/// One place where two JSON values differ.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// The path from the root: `.field`, `[index]`, `` for the root itself.
    pub path: String,
    /// The value on the left (expected, or the other plugin's), `None` when absent.
    pub left: Option<Value>,
    /// The value on the right (got, or the candidate's), `None` when absent.
    pub right: Option<Value>,
}

impl Difference {
    /// One line: `PATH: LEFT_LABEL X, RIGHT_LABEL Y`, with `(absent)` for a
    /// missing side and long values shortened.
    pub fn line(&self, left_label: &str, right_label: &str) -> String {
        let path = if self.path.is_empty() {
            "(root)"
        } else {
            &self.path
        };
        format!(
            "{path}: {left_label} {}, {right_label} {}",
            show(self.left.as_ref()),
            show(self.right.as_ref())
        )
    }
}

/// The most characters of a value a diff line shows.
const MAX_SHOWN: usize = 120;

fn show(value: Option<&Value>) -> String {
    let Some(value) = value else {
        return "(absent)".to_owned();
    };
    let text = value.to_string();
    if text.chars().count() <= MAX_SHOWN {
        return text;
    }
    let cut: String = text.chars().take(MAX_SHOWN).collect();
    format!("{cut}…")
}

/// Every place where `left` and `right` differ, in path order. Objects are
/// compared key by key and arrays element by element; numbers are equal
/// when both are the same integer, or otherwise the same `f64` (so an
/// expected `1.0` matches a `1.0` however it was written).
pub fn diff(left: &Value, right: &Value) -> Vec<Difference> {
    let mut out = Vec::new();
    walk(left, right, &mut String::new(), &mut out);
    out
}

/// Compares one member or element, `segment` (`.key` or `[i]`) below `path`:
/// walks into it when both sides have it, else records the one-sided value.
fn child(
    segment: &str,
    left: Option<&Value>,
    right: Option<&Value>,
    path: &mut String,
    out: &mut Vec<Difference>,
) {
    let len = path.len();
    path.push_str(segment);
    match (left, right) {
        (Some(a), Some(b)) => walk(a, b, path, out),
        (a, b) => out.push(Difference {
            path: path.clone(),
            left: a.cloned(),
            right: b.cloned(),
        }),
    }
    path.truncate(len);
}

fn walk(left: &Value, right: &Value, path: &mut String, out: &mut Vec<Difference>) {
    match (left, right) {
        (Value::Object(l), Value::Object(r)) => {
            let mut keys: Vec<&String> = l.keys().chain(r.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                child(&format!(".{key}"), l.get(key), r.get(key), path, out);
            }
        }
        (Value::Array(l), Value::Array(r)) => {
            for i in 0..l.len().max(r.len()) {
                child(&format!("[{i}]"), l.get(i), r.get(i), path, out);
            }
        }
        (Value::Number(a), Value::Number(b)) if numbers_equal(a, b) => {}
        (a, b) if a == b => {}
        (a, b) => out.push(Difference {
            path: path.clone(),
            left: Some(a.clone()),
            right: Some(b.clone()),
        }),
    }
}

fn numbers_equal(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    if let (Some(a), Some(b)) = (a.as_i64(), b.as_i64()) {
        return a == b;
    }
    if let (Some(a), Some(b)) = (a.as_u64(), b.as_u64()) {
        return a == b;
    }
    if a.is_f64() || b.is_f64() {
        return a.as_f64() == b.as_f64();
    }
    // One is above i64::MAX, the other negative.
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equal_values_have_no_difference() {
        let v = json!({"a": [1, {"b": null}], "c": "x", "f": 1.5});
        assert!(diff(&v, &v).is_empty());
        assert!(diff(&json!(1.0), &json!(1.0)).is_empty());
        assert!(diff(&json!({"n": 1}), &json!({"n": 1.0})).is_empty());
    }

    #[test]
    fn differences_name_their_paths() {
        let expected = json!({"count": 5, "tags": ["a", "b"], "owner": {"name": "Zoë"}});
        let got = json!({"count": 7, "tags": ["a"], "owner": {"name": "Zoe"}, "extra": true});
        let lines: Vec<String> = diff(&expected, &got)
            .iter()
            .map(|d| d.line("expected", "got"))
            .collect();
        assert_eq!(
            lines,
            [
                ".count: expected 5, got 7",
                ".extra: expected (absent), got true",
                ".owner.name: expected \"Zoë\", got \"Zoe\"",
                ".tags[1]: expected \"b\", got (absent)",
            ]
        );
    }

    #[test]
    fn a_root_of_another_type_and_big_numbers() {
        let d = diff(&json!({"a": 1}), &json!([1]));
        assert_eq!(d.len(), 1);
        assert_eq!(
            d[0].line("expected", "got"),
            "(root): expected {\"a\":1}, got [1]"
        );
        assert_eq!(diff(&json!(u64::MAX), &json!(-1)).len(), 1);
        assert_eq!(diff(&json!(u64::MAX), &json!(u64::MAX)).len(), 0);
        let long = "x".repeat(500);
        let line = diff(&json!(long), &json!("y"))[0].line("old", "new");
        assert!(line.len() < 200 && line.contains('…'), "{line}");
    }
}
