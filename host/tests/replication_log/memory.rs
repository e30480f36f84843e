//! What only the in-memory log does.

use crate::harness::*;

// ---------------------------------------------------------------------------
// MemoryLog

#[tokio::test]
async fn memory_insert_raw_refuses_a_taken_key() {
    let log = MemoryLog::new();
    log.insert_raw(raw(COUNTER, "a", 1, 0)).unwrap();
    assert!(matches!(
        log.insert_raw(raw(COUNTER, "a", 1, 0)),
        Err(LogError::Backend { .. })
    ));
    assert_eq!(log.read_from(COUNTER, "a", 0, 10).await.unwrap().len(), 1);
}
