//! The Hailuo AI web protocol (`hailuo-web-protocol.md`): signing, the device
//! query, device registration, the envelope, the chat stream and deletion.

pub mod client;
pub mod config;
pub mod device_query;
pub mod stream;

pub use client::HailuoClient;
pub use config::HailuoConfig;
