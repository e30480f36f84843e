pub mod contract;
pub mod replication_log;
pub mod value;
