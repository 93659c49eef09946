//! The OpenAI wire surface: requests as typed values, responses and stream chunks.

pub mod audio;
pub(crate) mod body;
pub mod chat;
pub mod encode;
pub mod models;
pub mod usage;
