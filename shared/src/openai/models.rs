//! `GET /v1/models`.

use serde_json::{json, Value};

/// Models this service answers to. The upstream picks its own model; the name a
/// caller sends is echoed back, so any string works. These are the ones we list.
pub const MODELS: &[&str] = &[
    "hailuo",
    "MiniMax-Text-01",
    "MiniMax-VL-01",
    "MiniMax-M1",
    "MiniMax-M2.5",
    "MiniMax-M2.7",
];

/// Fixed so the list is the same on every call (2024-05-01).
const CREATED: i64 = 1_714_521_600;

pub fn model_list() -> Value {
    let data: Vec<Value> = MODELS
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": CREATED, "owned_by": "minimax"}))
        .collect();
    json!({"object": "list", "data": data})
}

pub fn model(id: &str) -> Option<Value> {
    model_list()["data"]
        .as_array()?
        .iter()
        .find(|m| m["id"] == id)
        .cloned()
}
