//! How a shadow candidate's result compares with the served plugin's: the
//! classes of README.md, "Shadow decoding". Pure: no I/O, no clock.

use serde_json::Value;

use crate::json_diff::{self, Difference};

/// The class of one shadow decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// Both decoded, to equal values.
    Same,
    /// Both decoded; the candidate's value has every field of the served
    /// one, equal, and new fields besides.
    FieldsAdded,
    /// Both decoded, to values that differ otherwise.
    Differs,
    /// The candidate failed (whatever the served plugin did).
    CandidateFailed,
    /// The served plugin failed where the candidate decodes.
    CandidateRecovers,
    /// Not decoded by the candidate: no decode slot was free.
    Shed,
}

impl Class {
    /// Every class, in the order they are shown.
    pub const ALL: [Class; 6] = [
        Class::Same,
        Class::FieldsAdded,
        Class::Differs,
        Class::CandidateFailed,
        Class::CandidateRecovers,
        Class::Shed,
    ];

    /// A stable snake_case label: the metric's `result`, the JSON's keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Same => "same",
            Class::FieldsAdded => "fields_added",
            Class::Differs => "differs",
            Class::CandidateFailed => "candidate_failed",
            Class::CandidateRecovers => "candidate_recovers",
            Class::Shed => "shed",
        }
    }

    /// This class's position in [`Class::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A decoded snapshot's class, and where the values differ (field paths,
/// served on the left, candidate on the right) when both decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The class.
    pub class: Class,
    /// Every difference, in path order; empty unless both decoded.
    pub differences: Vec<Difference>,
}

/// Classifies one snapshot: `served` and `candidate` are each decode's
/// value as JSON, or `None` when it failed. Both failing is
/// `candidate_failed`: nothing the candidate decodes tells it apart.
pub fn classify(served: Option<&Value>, candidate: Option<&Value>) -> Verdict {
    let (served, candidate) = match (served, candidate) {
        (_, None) => return verdict(Class::CandidateFailed),
        (None, Some(_)) => return verdict(Class::CandidateRecovers),
        (Some(s), Some(c)) => (s, c),
    };
    let differences = json_diff::diff(served, candidate);
    let class = if differences.is_empty() {
        Class::Same
    } else if extends(served, candidate) {
        Class::FieldsAdded
    } else {
        Class::Differs
    };
    Verdict { class, differences }
}

/// A verdict without differences.
fn verdict(class: Class) -> Verdict {
    Verdict {
        class,
        differences: Vec::new(),
    }
}

/// Whether `candidate` holds everything `served` holds, equal: every
/// object member of `served`, at every depth, is in `candidate` and
/// extended by it; arrays keep their length (an extra element is not a
/// field); everything else is equal as [`json_diff::diff`] compares.
fn extends(served: &Value, candidate: &Value) -> bool {
    match (served, candidate) {
        (Value::Object(s), Value::Object(c)) => s
            .iter()
            .all(|(key, value)| c.get(key).is_some_and(|other| extends(value, other))),
        (Value::Array(s), Value::Array(c)) => {
            s.len() == c.len() && s.iter().zip(c).all(|(a, b)| extends(a, b))
        }
        (a, b) => json_diff::diff(a, b).is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn class(served: Value, candidate: Value) -> Class {
        classify(Some(&served), Some(&candidate)).class
    }

    #[test]
    fn equal_values_are_the_same_at_any_depth() {
        let v = json!({"count": 3, "owner": {"name": "Zoë", "tags": ["a", {"b": 1.0}]}});
        assert_eq!(class(v.clone(), v), Class::Same);
        assert_eq!(class(json!({"n": 1}), json!({"n": 1.0})), Class::Same);
        assert!(
            classify(Some(&json!(1)), Some(&json!(1)))
                .differences
                .is_empty()
        );
    }

    #[test]
    fn new_fields_at_any_depth_are_fields_added() {
        let served = json!({"count": 3, "owner": {"name": "Zoë"}, "items": [{"id": 1}]});
        let candidate = json!({
            "count": 3, "updated_by": "v2",
            "owner": {"name": "Zoë", "since": 2020},
            "items": [{"id": 1, "qty": 2}],
        });
        let verdict = classify(Some(&served), Some(&candidate));
        assert_eq!(verdict.class, Class::FieldsAdded);
        let lines: Vec<String> = verdict
            .differences
            .iter()
            .map(|d| d.line("served", "candidate"))
            .collect();
        assert_eq!(
            lines,
            [
                ".items[0].qty: served (absent), candidate 2",
                ".owner.since: served (absent), candidate 2020",
                ".updated_by: served (absent), candidate \"v2\"",
            ]
        );
    }

    #[test]
    fn a_changed_removed_or_retyped_field_differs() {
        let served = json!({"count": 3, "owner": {"name": "Zoë"}});
        // A nested value changed, next to an added field.
        let changed = json!({"count": 3, "owner": {"name": "Zoe"}, "extra": 1});
        assert_eq!(class(served.clone(), changed), Class::Differs);
        // A field removed.
        assert_eq!(class(served.clone(), json!({"count": 3})), Class::Differs);
        // Another type at the root or below.
        assert_eq!(class(served.clone(), json!([3])), Class::Differs);
        assert_eq!(
            class(served, json!({"count": "3", "owner": {"name": "Zoë"}})),
            Class::Differs
        );
        // An extra array element is not a field.
        assert_eq!(
            class(json!({"a": [1]}), json!({"a": [1, 2]})),
            Class::Differs
        );
    }

    #[test]
    fn failures_are_classed_by_who_failed() {
        let v = json!({"count": 1});
        assert_eq!(classify(Some(&v), None).class, Class::CandidateFailed);
        assert_eq!(classify(None, None).class, Class::CandidateFailed);
        assert_eq!(classify(None, Some(&v)).class, Class::CandidateRecovers);
        assert!(classify(None, Some(&v)).differences.is_empty());
    }

    #[test]
    fn labels_are_stable_and_indexes_match() {
        let labels: Vec<&str> = Class::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            labels,
            [
                "same",
                "fields_added",
                "differs",
                "candidate_failed",
                "candidate_recovers",
                "shed"
            ]
        );
        for (i, class) in Class::ALL.iter().enumerate() {
            assert_eq!(class.index(), i);
        }
    }
}
