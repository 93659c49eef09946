//! The MiniMax Agent web protocol (`minimax-agent-protocol.md`): JWT
//! credentials, the query and three signatures, device registration, and a
//! send-then-poll chat turned into a stream.

pub mod client;
pub mod config;
pub mod credential;
pub mod device_query;
pub mod poll;

pub use client::AgentClient;
pub use config::AgentConfig;
