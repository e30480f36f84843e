//! The shared suite: every case runs against every backend (memory, a
//! SQLite file, a real PostgreSQL), one test per (backend, case).

use crate::harness::{memory, postgres, sqlite};

/// One test per (backend, case).
macro_rules! suite {
    ($backend:ident: $($case:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(harness) = super::$backend(stringify!($case)).await {
                        super::cases::$case(&*harness).await;
                    }
                }
            )*
        }
    };
}

macro_rules! suite_for_all_backends {
    ($($case:ident),* $(,)?) => {
        suite!(memory: $($case),*);
        suite!(sqlite: $($case),*);
        suite!(postgres: $($case),*);
    };
}

suite_for_all_backends!(
    empty_log_answers,
    append_then_read_in_order,
    latest_sequence_is_zero_until_appended,
    append_refuses_equal_and_lower_sequences,
    sequences_near_i64_max_round_trip,
    truncate_deletes_below_and_counts,
    grain_heads_and_types,
    refused_rows_do_not_hide_good_rows,
    awkward_grain_keys_round_trip,
    empty_and_multi_megabyte_payloads,
    racing_appends_end_in_conflicts,
    changes_since_lists_then_reports_only_new_rows,
    changes_since_sees_rows_after_the_newest_were_deleted,
    change_cursor_continues_like_a_listings_cursor,
    scan_hands_each_grain_over_as_read_from_would,
    reads_what_an_orlando_primary_wrote,
);

// ---------------------------------------------------------------------------
// The shared suite

mod cases {
    use crate::harness::*;

    pub async fn empty_log_answers(h: &dyn Harness) {
        let log = h.log();
        log.ping().await.expect("ping");
        assert!(log.read_from(COUNTER, "a", 0, 10).await.unwrap().is_empty());
        assert_eq!(log.latest_sequence(COUNTER, "a").await.unwrap(), 0);
        assert!(log.grain_heads(COUNTER).await.unwrap().is_empty());
        assert!(log.grain_types().await.unwrap().is_empty());
        assert_eq!(log.truncate(COUNTER, "a", 10).await.unwrap(), 0);
    }

    pub async fn append_then_read_in_order(h: &dyn Harness) {
        let log = h.log();
        for s in [1, 2, 5, 9] {
            assert_eq!(
                log.append(&entry(COUNTER, "k", s, &[s as u8]))
                    .await
                    .unwrap(),
                s
            );
        }
        // Neighbours that must not leak into the grain's reads.
        log.append(&entry(COUNTER, "k2", 3, b"x")).await.unwrap();
        log.append(&entry("Other", "k", 4, b"x")).await.unwrap();

        let all = log.read_from(COUNTER, "k", 0, 100).await.unwrap();
        let expected: Vec<LogRecord> = [1, 2, 5, 9]
            .map(|s| LogRecord::Entry(entry(COUNTER, "k", s, &[s as u8])))
            .to_vec();
        assert_eq!(all, expected, "every column round-trips, in order");

        let read = |after, limit| {
            let log = log.clone();
            async move { shape(&log.read_from(COUNTER, "k", after, limit).await.unwrap()) }
        };
        assert_eq!(read(2, 100).await, ["e5", "e9"], "strictly after");
        assert_eq!(read(3, 100).await, ["e5", "e9"], "after a gap");
        assert_eq!(read(0, 2).await, ["e1", "e2"], "limit keeps the lowest");
        assert_eq!(read(5, 1).await, ["e9"]);
        assert!(read(9, 100).await.is_empty());
        assert!(read(0, 0).await.is_empty(), "limit 0");
        assert!(read(u64::MAX, 100).await.is_empty());
        assert!(
            log.read_from(COUNTER, "nope", 0, 100)
                .await
                .unwrap()
                .is_empty()
        );

        let delta = LogEntry {
            entry_type: EntryType::Delta,
            ..entry(COUNTER, "k", 10, b"d")
        };
        log.append(&delta).await.unwrap();
        let after = log.read_from(COUNTER, "k", 9, 100).await.unwrap();
        assert_eq!(
            after,
            vec![LogRecord::Entry(delta)],
            "a Delta is an entry, not refused"
        );
    }

    pub async fn latest_sequence_is_zero_until_appended(h: &dyn Harness) {
        let log = h.log();
        assert_eq!(log.latest_sequence(COUNTER, "a").await.unwrap(), 0);
        log.append(&entry(COUNTER, "a", 4, b"")).await.unwrap();
        log.append(&entry(COUNTER, "a", 40, b"")).await.unwrap();
        assert_eq!(log.latest_sequence(COUNTER, "a").await.unwrap(), 40);
        assert_eq!(log.latest_sequence(COUNTER, "b").await.unwrap(), 0);
        assert_eq!(log.latest_sequence("Other", "a").await.unwrap(), 0);
    }

    pub async fn append_refuses_equal_and_lower_sequences(h: &dyn Harness) {
        let log = h.log();
        match log.append(&entry(COUNTER, "a", 0, b"zero")).await {
            Err(LogError::SequenceConflict {
                sequence: 0,
                latest: 0,
                ..
            }) => {}
            other => panic!("sequence 0 on an empty grain: {other:?}"),
        }
        log.append(&entry(COUNTER, "a", 5, b"first")).await.unwrap();
        for (sequence, why) in [(5, "equal"), (3, "lower")] {
            match log.append(&entry(COUNTER, "a", sequence, b"second")).await {
                Err(LogError::SequenceConflict {
                    grain_type,
                    grain_key,
                    sequence: s,
                    latest,
                }) => {
                    assert_eq!((grain_type.as_str(), grain_key.as_str()), (COUNTER, "a"));
                    assert_eq!((s, latest), (sequence, 5), "{why}");
                }
                other => panic!("{why} sequence: {other:?}"),
            }
        }
        let rows = log.read_from(COUNTER, "a", 0, 10).await.unwrap();
        assert_eq!(
            rows,
            vec![LogRecord::Entry(entry(COUNTER, "a", 5, b"first"))]
        );
        // Another grain is not in conflict.
        log.append(&entry(COUNTER, "b", 3, b"")).await.unwrap();
        log.append(&entry(COUNTER, "a", 6, b"")).await.unwrap();
        assert_eq!(log.latest_sequence(COUNTER, "a").await.unwrap(), 6);
    }

    pub async fn sequences_near_i64_max_round_trip(h: &dyn Harness) {
        let log = h.log();
        let max = i64::MAX as u64;
        log.append(&entry(COUNTER, "big", max - 1, b"a"))
            .await
            .unwrap();
        log.append(&entry(COUNTER, "big", max, b"b")).await.unwrap();
        let rows = log.read_from(COUNTER, "big", max - 2, 10).await.unwrap();
        assert_eq!(shape(&rows), [format!("e{}", max - 1), format!("e{max}")]);
        assert_eq!(&as_entry(&rows[1]).payload[..], b"b");
        assert_eq!(log.latest_sequence(COUNTER, "big").await.unwrap(), max);
        assert_eq!(
            log.grain_heads(COUNTER).await.unwrap(),
            heads(&[("big", max)])
        );
        assert!(
            log.read_from(COUNTER, "big", max, 10)
                .await
                .unwrap()
                .is_empty()
        );

        let too_big = log.append(&entry(COUNTER, "big2", max + 1, b"")).await;
        assert!(
            matches!(too_big, Err(LogError::Backend { ref message, .. }) if message.contains(&(max + 1).to_string())),
            "a sequence above i64::MAX cannot be stored: {too_big:?}"
        );
        assert_eq!(log.latest_sequence(COUNTER, "big2").await.unwrap(), 0);
        assert!(matches!(
            log.append(&entry(COUNTER, "big", max, b"")).await,
            Err(LogError::SequenceConflict { latest, .. }) if latest == max
        ));
    }

    pub async fn truncate_deletes_below_and_counts(h: &dyn Harness) {
        let log = h.log();
        for s in 1..=5 {
            log.append(&entry(COUNTER, "t", s, b"")).await.unwrap();
            log.append(&entry(COUNTER, "keep", s, b"")).await.unwrap();
        }
        assert_eq!(log.truncate(COUNTER, "t", 3).await.unwrap(), 2);
        assert_eq!(
            shape(&log.read_from(COUNTER, "t", 0, 10).await.unwrap()),
            ["e3", "e4", "e5"]
        );
        assert_eq!(
            log.truncate(COUNTER, "t", 3).await.unwrap(),
            0,
            "nothing left below 3"
        );
        assert_eq!(log.truncate(COUNTER, "t", 0).await.unwrap(), 0);
        assert_eq!(log.latest_sequence(COUNTER, "t").await.unwrap(), 5);
        assert_eq!(log.truncate(COUNTER, "t", u64::MAX).await.unwrap(), 3);
        assert!(log.read_from(COUNTER, "t", 0, 10).await.unwrap().is_empty());
        assert_eq!(log.latest_sequence(COUNTER, "t").await.unwrap(), 0);
        assert_eq!(
            log.read_from(COUNTER, "keep", 0, 10).await.unwrap().len(),
            5
        );
    }

    pub async fn grain_heads_and_types(h: &dyn Harness) {
        let log = h.log();
        for (grain_type, key, s) in [
            (COUNTER, "a", 1),
            (COUNTER, "a", 3),
            (COUNTER, "b", 7),
            ("BankAccount", "a", 2),
        ] {
            log.append(&entry(grain_type, key, s, b"")).await.unwrap();
        }
        // A row with a valid sequence but an unknown entry type still moves the head;
        // a grain whose only row has a negative sequence has none.
        h.insert_raw(raw(COUNTER, "a", 10, 7)).await;
        h.insert_raw(raw(COUNTER, "neg", -4, 0)).await;

        assert_eq!(
            sorted_heads(log.grain_heads(COUNTER).await.unwrap()),
            heads(&[("a", 10), ("b", 7)])
        );
        assert_eq!(
            log.grain_heads("BankAccount").await.unwrap(),
            heads(&[("a", 2)])
        );
        assert!(log.grain_heads("Nothing").await.unwrap().is_empty());
        let mut types = log.grain_types().await.unwrap();
        types.sort();
        assert_eq!(types, ["BankAccount", COUNTER]);
    }

    /// Asks for changes and checks the answer against the grains that changed:
    /// a complete answer must equal `grain_heads`; an incremental one must
    /// name exactly the changed grains with their newest sequence.
    async fn expect_changes(
        log: &dyn ReplicationLog,
        cursor: Option<&ChangeCursor>,
        changed: &[(&str, u64)],
    ) -> Option<ChangeCursor> {
        let changes = log.changes_since(COUNTER, cursor).await.unwrap();
        if changes.complete {
            assert_eq!(
                sorted_heads(changes.heads),
                sorted_heads(log.grain_heads(COUNTER).await.unwrap()),
                "a complete answer lists every grain"
            );
        } else {
            assert!(cursor.is_some(), "the first answer is complete");
            assert_eq!(sorted_heads(changes.heads), heads(changed));
        }
        changes.cursor
    }

    pub async fn changes_since_lists_then_reports_only_new_rows(h: &dyn Harness) {
        let log = h.log();
        let first = log.changes_since(COUNTER, None).await.unwrap();
        assert!(first.complete && first.heads.is_empty());
        let cursor = first.cursor;

        log.append(&entry(COUNTER, "a", 1, b"")).await.unwrap();
        log.append(&entry(COUNTER, "b", 4, b"")).await.unwrap();
        log.append(&entry("BankAccount", "a", 2, b""))
            .await
            .unwrap();
        let cursor = expect_changes(&*log, cursor.as_ref(), &[("a", 1), ("b", 4)]).await;
        // Nothing new: an incremental answer is empty.
        let cursor = expect_changes(&*log, cursor.as_ref(), &[]).await;

        log.append(&entry(COUNTER, "a", 2, b"")).await.unwrap();
        log.append(&entry(COUNTER, "a", 5, b"")).await.unwrap();
        log.append(&entry(COUNTER, "c", 1, b"")).await.unwrap();
        log.append(&entry("BankAccount", "z", 1, b""))
            .await
            .unwrap();
        // Rows without a valid sequence never make a head.
        h.insert_raw(raw(COUNTER, "neg", -3, 0)).await;
        let cursor = expect_changes(&*log, cursor.as_ref(), &[("a", 5), ("c", 1)]).await;

        // Another grain type's changes do not show; its own cursor works too.
        let bank = log.changes_since("BankAccount", None).await.unwrap();
        assert_eq!(sorted_heads(bank.heads), heads(&[("a", 2), ("z", 1)]));
        log.append(&entry(COUNTER, "b", 9, b"")).await.unwrap();
        expect_changes(&*log, cursor.as_ref(), &[("b", 9)]).await;

        // Without a cursor: everything, as grain_heads.
        let all = log.changes_since(COUNTER, None).await.unwrap();
        assert!(all.complete);
        assert_eq!(
            sorted_heads(all.heads),
            heads(&[("a", 5), ("b", 9), ("c", 1)])
        );
    }

    /// A cold start takes `change_cursor` instead of listing: from it, an
    /// incremental listing names what was written after, and only that. A
    /// backend that cannot list incrementally (PostgreSQL without the
    /// change feed) has no cursor, and its listings are all complete.
    pub async fn change_cursor_continues_like_a_listings_cursor(h: &dyn Harness) {
        let log = h.log();
        log.append(&entry(COUNTER, "a", 1, b"")).await.unwrap();
        log.append(&entry(COUNTER, "c", 1, b"")).await.unwrap();
        let cursor = log.change_cursor(COUNTER).await.unwrap();
        let listed = log.changes_since(COUNTER, None).await.unwrap();
        assert_eq!(
            cursor.is_some(),
            listed.cursor.is_some(),
            "a cursor exactly where listings have one"
        );
        log.append(&entry(COUNTER, "b", 2, b"")).await.unwrap();
        log.append(&entry(COUNTER, "a", 3, b"")).await.unwrap();
        if let Some(cursor) = cursor {
            let changes = log.changes_since(COUNTER, Some(&cursor)).await.unwrap();
            assert!(!changes.complete, "{changes:?}");
            assert_eq!(sorted_heads(changes.heads), heads(&[("a", 3), ("b", 2)]));
        }
    }

    pub async fn changes_since_sees_rows_after_the_newest_were_deleted(h: &dyn Harness) {
        let log = h.log();
        log.append(&entry(COUNTER, "a", 1, b"")).await.unwrap();
        log.append(&entry(COUNTER, "b", 1, b"")).await.unwrap();
        log.append(&entry(COUNTER, "b", 2, b"")).await.unwrap();
        let cursor = log.changes_since(COUNTER, None).await.unwrap().cursor;

        // Deleting the newest rows lets SQLite hand their rowids out again:
        // the new rows must still be reported.
        assert_eq!(log.truncate(COUNTER, "b", 3).await.unwrap(), 2);
        log.append(&entry(COUNTER, "c", 7, b"")).await.unwrap();
        log.append(&entry(COUNTER, "b", 3, b"")).await.unwrap();
        let changes = log.changes_since(COUNTER, cursor.as_ref()).await.unwrap();
        let reported = sorted_heads(changes.heads.clone());
        for expected in heads(&[("b", 3), ("c", 7)]) {
            assert!(
                reported.contains(&expected),
                "{expected:?} missing from {changes:?}"
            );
        }
        if changes.complete {
            assert_eq!(
                reported,
                sorted_heads(log.grain_heads(COUNTER).await.unwrap())
            );
        }
        // And the cursor it returned keeps working.
        log.append(&entry(COUNTER, "d", 1, b"")).await.unwrap();
        expect_changes(&*log, changes.cursor.as_ref(), &[("d", 1)]).await;
    }

    pub async fn scan_hands_each_grain_over_as_read_from_would(h: &dyn Harness) {
        let log = h.log();
        // a: odd rows (unknown entry type, negative sequence) among good ones.
        log.append(&entry(COUNTER, "a", 1, b"a1")).await.unwrap();
        h.insert_raw(raw(COUNTER, "a", 2, 7)).await;
        h.insert_raw(raw(COUNTER, "a", -4, 0)).await;
        log.append(&entry(COUNTER, "a", 3, b"a3")).await.unwrap();
        // b: one row; c: more rows than a page; d: one row; e: only a
        // negative sequence (not a grain to the listing either).
        log.append(&entry(COUNTER, "b", 9, b"b9")).await.unwrap();
        for s in 1..=6 {
            log.append(&entry(COUNTER, "c", s, b"c")).await.unwrap();
        }
        log.append(&entry(COUNTER, "d", 2, b"d2")).await.unwrap();
        h.insert_raw(raw(COUNTER, "e", -1, 0)).await;
        log.append(&entry("Other", "a", 1, b"x")).await.unwrap();

        let mut after: Option<String> = None;
        let mut seen = Vec::new();
        for _ in 0..20 {
            let page = log
                .scan(COUNTER, after.as_deref(), 4)
                .await
                .unwrap()
                .expect("every backend scans");
            for grain in &page.grains {
                if grain.complete {
                    let read = log
                        .read_from(COUNTER, &grain.grain_key, 0, 100)
                        .await
                        .unwrap();
                    assert_eq!(grain.records, read, "{}", grain.grain_key);
                    assert_eq!(
                        grain.head,
                        log.latest_sequence(COUNTER, &grain.grain_key)
                            .await
                            .unwrap()
                    );
                } else {
                    assert!(grain.records.is_empty());
                }
                seen.push((grain.grain_key.clone(), grain.complete));
            }
            after = page.next_after;
            if after.is_none() {
                break;
            }
        }
        assert!(after.is_none(), "the scan did not end");
        // Each grain once, in key order; c does not fit a page of 4 rows.
        assert_eq!(
            seen,
            [
                ("a".to_owned(), true),
                ("b".to_owned(), true),
                ("c".to_owned(), false),
                ("d".to_owned(), true),
            ]
        );
        // A page large enough holds every grain whole.
        let page = log.scan(COUNTER, None, 100).await.unwrap().unwrap();
        assert_eq!(page.next_after, None);
        assert!(page.grains.iter().all(|g| g.complete));
        assert_eq!(
            page.grains
                .iter()
                .map(|g| g.grain_key.as_str())
                .collect::<Vec<_>>(),
            ["a", "b", "c", "d"]
        );
        assert_eq!(shape(&page.grains[0].records), ["e1", "r2", "e3", "r?"]);
    }

    pub async fn refused_rows_do_not_hide_good_rows(h: &dyn Harness) {
        let log = h.log();
        log.append(&entry(COUNTER, "k", 1, b"one")).await.unwrap();
        h.insert_raw(raw(COUNTER, "k", 2, 7)).await;
        log.append(&entry(COUNTER, "k", 3, b"three")).await.unwrap();
        h.insert_raw(raw(COUNTER, "k", -4, 0)).await;
        h.insert_raw(raw(COUNTER, "k", 4, -1)).await;
        log.append(&entry(COUNTER, "k", 5, b"five")).await.unwrap();

        let rows = log.read_from(COUNTER, "k", 0, 100).await.unwrap();
        assert_eq!(shape(&rows), ["e1", "r2", "e3", "r4", "e5", "r?"]);
        assert_eq!(&as_entry(&rows[2]).payload[..], b"three");
        let unknown = refusal(&rows[1]);
        assert!(unknown.reason.contains("entry_type"), "{}", unknown.reason);
        assert!(unknown.reason.contains('7'), "{}", unknown.reason);
        assert_eq!(
            (unknown.grain_type.as_str(), unknown.grain_key.as_str()),
            (COUNTER, "k")
        );
        assert!(refusal(&rows[3]).reason.contains("entry_type"));
        let negative = refusal(&rows[5]);
        assert!(negative.reason.contains("sequence"), "{}", negative.reason);
        assert!(negative.reason.contains("-4"), "{}", negative.reason);

        // Valid rows come first, so a small limit never hides them.
        assert_eq!(
            shape(&log.read_from(COUNTER, "k", 0, 2).await.unwrap()),
            ["e1", "r2"]
        );
        assert_eq!(
            shape(&log.read_from(COUNTER, "k", 3, 100).await.unwrap()),
            ["r4", "e5", "r?"]
        );
        assert_eq!(log.latest_sequence(COUNTER, "k").await.unwrap(), 5);
        log.append(&entry(COUNTER, "k", 6, b"six")).await.unwrap();
        assert_eq!(
            shape(&log.read_from(COUNTER, "k", 5, 100).await.unwrap()),
            ["e6", "r?"]
        );
        // Truncation counts refused rows with a valid sequence, keeps the others.
        assert_eq!(log.truncate(COUNTER, "k", 6).await.unwrap(), 5);
        assert_eq!(
            shape(&log.read_from(COUNTER, "k", 0, 100).await.unwrap()),
            ["e6", "r?"]
        );
    }

    pub async fn awkward_grain_keys_round_trip(h: &dyn Harness) {
        let log = h.log();
        let keys = [
            "ключ/with/slashes",
            "it's \"quoted\"; --",
            "emoji 🦀 ✓",
            "",
            "a",
            "a ",
            "%_",
            "back\\slash",
        ];
        let grain_type = "Ünïcode::Type<'q'>";
        for (i, key) in keys.iter().enumerate() {
            let payload = key.as_bytes();
            log.append(&entry(grain_type, key, i as u64 + 1, payload))
                .await
                .unwrap();
        }
        for (i, key) in keys.iter().enumerate() {
            let rows = log.read_from(grain_type, key, 0, 10).await.unwrap();
            assert_eq!(
                rows,
                vec![LogRecord::Entry(entry(
                    grain_type,
                    key,
                    i as u64 + 1,
                    key.as_bytes()
                ))],
                "key {key:?}"
            );
        }
        let mut expected: Vec<(&str, u64)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (*k, i as u64 + 1))
            .collect();
        expected.sort();
        assert_eq!(
            sorted_heads(log.grain_heads(grain_type).await.unwrap()),
            heads(&expected)
        );
        assert_eq!(log.grain_types().await.unwrap(), [grain_type]);
    }

    pub async fn empty_and_multi_megabyte_payloads(h: &dyn Harness) {
        let log = h.log();
        let big = noise(3 * 1024 * 1024 + 17);
        log.append(&entry(COUNTER, "p", 1, b"")).await.unwrap();
        log.append(&entry(COUNTER, "p", 2, &big)).await.unwrap();
        let rows = log.read_from(COUNTER, "p", 0, 10).await.unwrap();
        assert_eq!(shape(&rows), ["e1", "e2"]);
        assert!(as_entry(&rows[0]).payload.is_empty());
        assert!(
            as_entry(&rows[1]).payload == big,
            "3 MiB payload round-trips"
        );
    }

    pub async fn racing_appends_end_in_conflicts(h: &dyn Harness) {
        let log = h.log();
        log.append(&entry(COUNTER, "race", 1, b"")).await.unwrap();

        // Eight appends of one sequence: one wins, the others conflict.
        let tasks: Vec<_> = (0..8u8)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.append(&entry(COUNTER, "race", 2, &[i])).await })
            })
            .collect();
        let mut won = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(2) => won += 1,
                Err(LogError::SequenceConflict { sequence: 2, .. }) => {}
                other => panic!("racing append: {other:?}"),
            }
        }
        assert_eq!(won, 1);

        // Distinct sequences at once: each stored or refused, never an error.
        let tasks: Vec<_> = (3..=10u64)
            .map(|s| {
                let log = log.clone();
                tokio::spawn(async move { log.append(&entry(COUNTER, "race", s, b"")).await })
            })
            .collect();
        let mut stored = vec![1, 2];
        for task in tasks {
            match task.await.unwrap() {
                Ok(s) => stored.push(s),
                Err(LogError::SequenceConflict { .. }) => {}
                other => panic!("racing append: {other:?}"),
            }
        }
        stored.sort();
        let rows = log.read_from(COUNTER, "race", 0, 100).await.unwrap();
        let read: Vec<u64> = rows.iter().map(|r| as_entry(r).sequence).collect();
        assert_eq!(read, stored, "exactly the successful appends are stored");
        assert!(
            stored.len() > 2,
            "the first of the distinct appends is stored"
        );
    }

    /// A reader opened by URL reads the rows an Orlando primary wrote with
    /// its own DDL and INSERT, and follows while the primary keeps writing.
    pub async fn reads_what_an_orlando_primary_wrote(h: &dyn Harness) {
        let row = |key: &str, sequence: i64, entry_type: i64, payload: &[u8]| RawRow {
            grain_type: COUNTER.to_owned(),
            grain_key: key.to_owned(),
            sequence,
            timestamp_millis: 1_700_000_000_123,
            source_cluster: "us-east".to_owned(),
            entry_type,
            payload: payload.to_vec(),
        };
        h.insert_raw(row("a", 1, 0, &[0x02])).await;
        h.insert_raw(row("a", 2, 0, &[0x04])).await;
        h.insert_raw(row("b", 7, 1, b"delta")).await;

        let log = h.reader().await;
        let rows = log.read_from(COUNTER, "a", 0, 10).await.unwrap();
        assert_eq!(
            rows,
            vec![
                LogRecord::Entry(LogEntry {
                    timestamp_millis: 1_700_000_000_123,
                    ..entry(COUNTER, "a", 1, &[0x02])
                }),
                LogRecord::Entry(LogEntry {
                    timestamp_millis: 1_700_000_000_123,
                    ..entry(COUNTER, "a", 2, &[0x04])
                }),
            ]
        );
        let b = log.read_from(COUNTER, "b", 0, 10).await.unwrap();
        assert_eq!(as_entry(&b[0]).entry_type, EntryType::Delta);
        assert_eq!(
            sorted_heads(log.grain_heads(COUNTER).await.unwrap()),
            heads(&[("a", 2), ("b", 7)])
        );
        assert_eq!(log.grain_types().await.unwrap(), [COUNTER]);

        // The primary keeps writing while we read.
        h.insert_raw(row("a", 3, 0, &[0x06])).await;
        assert_eq!(
            shape(&log.read_from(COUNTER, "a", 2, 10).await.unwrap()),
            ["e3"]
        );
    }
}
