pub mod contract;
pub mod plugin;
pub mod replication_log;
pub mod value;
