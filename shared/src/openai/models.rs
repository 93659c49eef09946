//! `GET /v1/models`.

use serde_json::{json, Value};

/// Fixed so the list is the same on every call (2024-05-01).
const CREATED: i64 = 1_714_521_600;

/// The list of the models the deployment's upstream serves (its own ids;
/// any name still works, and is echoed back).
pub fn model_list(ids: &[String]) -> Value {
    let data: Vec<Value> = ids
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": CREATED, "owned_by": "minimax"}))
        .collect();
    json!({"object": "list", "data": data})
}

pub fn model(ids: &[String], id: &str) -> Option<Value> {
    model_list(ids)["data"]
        .as_array()?
        .iter()
        .find(|m| m["id"] == id)
        .cloned()
}
