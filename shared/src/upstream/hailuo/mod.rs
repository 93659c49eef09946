//! The Hailuo AI web protocol (`hailuo-web-protocol.md`): signing, the device
//! query, device registration, the envelope, the chat stream and deletion.

pub mod client;
pub mod device;
pub mod query;
pub mod signing;
pub mod stream;

pub use client::HailuoClient;
