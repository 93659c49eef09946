//! The Hailuo AI web protocol (`hailuo-web-protocol.md`): signing, the device
//! query, device registration, the envelope, the chat stream, file uploads,
//! speech (`voice.rs`) and deletion.

pub(crate) mod client;
pub(crate) mod config;
pub(crate) mod device_query;
pub(crate) mod stream;
pub(crate) mod upload;
pub(crate) mod voice;

pub use client::HailuoClient;
pub use config::HailuoConfig;
