//! The accounts table in DynamoDB (`ACCOUNTS_TABLE`): one item per account,
//! keyed by `account` (the token's fingerprint, or a lock's name), written
//! only with conditional updates, so that DynamoDB's own atomicity is what
//! keeps two environments from holding one account.
//!
//! Item attributes (the template declares the same; the server's
//! `create_unless_there` makes it):
//! `account` (S, the key), `upstream`, `holder`, `lease_until` (N, unix ms),
//! `state` (`dead`, `throttled`, `exhausted`, `plan_window`, `blocked`,
//! `egress_refused`), `state_until` and `since` (N, unix ms), `reason`,
//! `marked_by`, and `expires` (N, unix seconds: the table's TTL attribute,
//! a day past the last lease or state, so idle items go by themselves).
//! Attribute names go through `#names` (`state` is one of DynamoDB's
//! reserved words).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, KeysAndAttributes,
    ScalarAttributeType, TableStatus, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;

use super::store::{AccountStore, Mark, Record, StoreError};
use crate::aws::Setup;

/// How long past its last use an item is kept.
const KEEP_S: u64 = 24 * 3600;
/// BatchGetItem's most keys per call.
const BATCH: usize = 100;

pub struct AccountsTable {
    client: Client,
    name: String,
}

impl AccountsTable {
    pub async fn new(setup: &Setup, name: &str, app_name: &str) -> Self {
        Self {
            client: Client::new(&setup.load(app_name).await),
            name: name.to_string(),
        }
    }

    /// Create the table unless it exists (on demand, TTL on `expires`), and
    /// wait until it is active. The self-hosted server's; the Lambda
    /// functions' table comes from the template. Not in `AccountStore`, so
    /// that no function links it through the trait's vtable: CreateTable,
    /// DescribeTable and their table descriptions are 0.15 MB of code.
    pub(crate) async fn create_unless_there(&self) -> Result<(), StoreError> {
        match self
            .client
            .describe_table()
            .table_name(&self.name)
            .send()
            .await
        {
            Ok(_) => return self.wait_active().await,
            Err(e) if e.code() == Some("ResourceNotFoundException") => {}
            Err(e) => return Err(failed("DescribeTable", e)),
        }
        let created = self
            .client
            .create_table()
            .table_name(&self.name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("account")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(|e| StoreError(e.to_string()))?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("account")
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(|e| StoreError(e.to_string()))?,
            )
            .send()
            .await;
        match created {
            Ok(_) => tracing::info!(table = %self.name, "created the accounts table"),
            // Another replica created it first.
            Err(e) if e.code() == Some("ResourceInUseException") => {}
            Err(e) => return Err(failed("CreateTable", e)),
        }
        self.wait_active().await?;
        let ttl = self
            .client
            .update_time_to_live()
            .table_name(&self.name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name("expires")
                    .enabled(true)
                    .build()
                    .map_err(|e| StoreError(e.to_string()))?,
            )
            .send()
            .await;
        match ttl {
            Ok(_) => Ok(()),
            // Already on (a second replica, or a restart).
            Err(e) if e.code() == Some("ValidationException") => Ok(()),
            Err(e) => Err(failed("UpdateTimeToLive", e)),
        }
    }

    async fn wait_active(&self) -> Result<(), StoreError> {
        for _ in 0..60 {
            let d = self
                .client
                .describe_table()
                .table_name(&self.name)
                .send()
                .await
                .map_err(|e| failed("DescribeTable", e))?;
            if d.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(StoreError(format!(
            "the accounts table {} did not become active within 30 s",
            self.name
        )))
    }

    fn key(account: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([("account".to_string(), s(account))])
    }

    /// An update of one account's item.
    fn update(
        &self,
        account: &str,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(Self::key(account)))
    }
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn failed<E: ProvideErrorMetadata + std::error::Error + 'static>(
    operation: &str,
    e: aws_smithy_runtime_api::client::result::SdkError<
        E,
        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
    >,
) -> StoreError {
    match e.code() {
        Some(code) => StoreError(format!(
            "DynamoDB {operation}: {code}: {}",
            crate::text::clip(e.message().unwrap_or_default(), 200)
        )),
        None => match crate::aws::failure(&e) {
            crate::aws::Failure::Setup(text) | crate::aws::Failure::Transport(text) => {
                StoreError(format!("DynamoDB {operation}: {text}"))
            }
        },
    }
}

fn is_condition_failed<E: ProvideErrorMetadata>(e: &E) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

fn record(item: &HashMap<String, AttributeValue>) -> Record {
    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let num = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Record {
        account: text("account").unwrap_or_default(),
        upstream: text("upstream").unwrap_or_default(),
        holder: text("holder"),
        lease_until_ms: num("lease_until"),
        state: text("state"),
        state_until_ms: num("state_until"),
        since_ms: num("since"),
        reason: text("reason").unwrap_or_default(),
    }
}

#[async_trait]
impl AccountStore for AccountsTable {
    fn now_ms(&self) -> u64 {
        super::unix_ms()
    }

    async fn lease(
        &self,
        account: &str,
        upstream: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = self.now_ms();
        let result = self
            .update(account)
            .update_expression("SET #h = :h, #lu = :lu, #up = :up, #ex = :ex")
            .condition_expression("attribute_not_exists(#lu) OR #lu < :now OR #h = :h")
            .expression_attribute_names("#h", "holder")
            .expression_attribute_names("#lu", "lease_until")
            .expression_attribute_names("#up", "upstream")
            .expression_attribute_names("#ex", "expires")
            .expression_attribute_values(":h", s(holder))
            .expression_attribute_values(":lu", n(now + ttl.as_millis() as u64))
            .expression_attribute_values(":up", s(upstream))
            .expression_attribute_values(":ex", n(now / 1000 + KEEP_S))
            .expression_attribute_values(":now", n(now))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(failed("UpdateItem (lease)", e)),
        }
    }

    async fn renew(&self, account: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let now = self.now_ms();
        let result = self
            .update(account)
            .update_expression("SET #lu = :lu")
            .condition_expression("#h = :h")
            .expression_attribute_names("#h", "holder")
            .expression_attribute_names("#lu", "lease_until")
            .expression_attribute_values(":h", s(holder))
            .expression_attribute_values(":lu", n(now + ttl.as_millis() as u64))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(failed("UpdateItem (renew)", e)),
        }
    }

    async fn release(&self, account: &str, holder: &str) -> Result<(), StoreError> {
        let result = self
            .update(account)
            .update_expression("REMOVE #h, #lu")
            .condition_expression("#h = :h")
            .expression_attribute_names("#h", "holder")
            .expression_attribute_names("#lu", "lease_until")
            .expression_attribute_values(":h", s(holder))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Expired and taken by another: nothing of ours to give back.
            Err(e) if is_condition_failed(&e) => Ok(()),
            Err(e) => Err(failed("UpdateItem (release)", e)),
        }
    }

    async fn mark(&self, account: &str, mark: &Mark) -> Result<(), StoreError> {
        let now = self.now_ms();
        self.update(account)
            .update_expression(
                "SET #up = :up, #st = :st, #su = :su, #si = :si, #re = :re, #mb = :mb, #ex = :ex",
            )
            .expression_attribute_names("#up", "upstream")
            .expression_attribute_names("#st", "state")
            .expression_attribute_names("#su", "state_until")
            .expression_attribute_names("#si", "since")
            .expression_attribute_names("#re", "reason")
            .expression_attribute_names("#mb", "marked_by")
            .expression_attribute_names("#ex", "expires")
            .expression_attribute_values(":up", s(&mark.upstream))
            .expression_attribute_values(":st", s(mark.state.as_str()))
            .expression_attribute_values(":su", n(now + mark.for_ms))
            .expression_attribute_values(":si", n(now))
            .expression_attribute_values(
                ":re",
                s(if mark.reason.is_empty() {
                    "-"
                } else {
                    &mark.reason
                }),
            )
            .expression_attribute_values(":mb", s(&mark.holder))
            .expression_attribute_values(":ex", n((now + mark.for_ms) / 1000 + KEEP_S))
            .send()
            .await
            .map(drop)
            .map_err(|e| failed("UpdateItem (mark)", e))
    }

    async fn read(&self, accounts: &[String]) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::new();
        for chunk in accounts.chunks(BATCH) {
            let mut keys = KeysAndAttributes::builder().consistent_read(true);
            for account in chunk {
                keys = keys.keys(Self::key(account));
            }
            let keys = keys.build().map_err(|e| StoreError(e.to_string()))?;
            let answer = self
                .client
                .batch_get_item()
                .request_items(&self.name, keys)
                .send()
                .await
                .map_err(|e| failed("BatchGetItem", e))?;
            // Unprocessed keys (throttling) are read as unknown this time.
            if let Some(items) = answer.responses().and_then(|r| r.get(&self.name)) {
                out.extend(items.iter().map(record));
            }
        }
        Ok(out)
    }

    async fn all(&self) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.name)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| failed("Scan", e))?;
            out.extend(page.items().iter().map(record));
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() && out.len() < 100_000 => start = Some(key.clone()),
                _ => return Ok(out),
            }
        }
    }
}
