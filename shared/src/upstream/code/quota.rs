//! What an account may still spend (section 7), for the operator's view:
//! the credits balance (`credit/details` on the agent host) and the Token
//! Plan's windows (`coding_plan/remains` on the platform host), both read
//! with the account's access token.
//!
//! Both are business routes: a failure comes as HTTP 200 with a non-zero
//! `base_resp.status_code`. A plan-less account (2062) and an mcode token
//! the plan route will not take (1004) mean "not readable", not an account
//! fault. `usage_count` has meant both "remaining" and "consumed", so only
//! `remaining_percent` is read. Nothing here is on a request's path.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{ACCEPT, AUTHORIZATION};
use serde_json::Value;

use super::CodeClient;
use crate::upstream::{Credits, Plan, PlanWindow, Quota, Quotas, Reading};

/// The longest one reading may take: the view waits for it.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of an answer read (a few rows of grants or windows).
const MAX_BODY: usize = 256 * 1024;
/// `current_*_status` of a window without a limit.
const UNLIMITED: i64 = 3;

#[async_trait]
impl Quotas for CodeClient {
    async fn quota(&self, token: &str) -> Quota {
        if Self::check_token(token).is_err() {
            let why = "the account holds no access token";
            return Quota {
                credits: Reading::not_readable(why),
                plan: Reading::not_readable(why),
            };
        }
        let credits_url = format!(
            "{}/minimax-cloud/api/v1/credit/details",
            self.config.base_url
        );
        let plan_url = format!(
            "{}/v1/api/openplatform/coding_plan/remains",
            self.config.platform_url
        );
        let (credits, plan) = tokio::join!(
            self.business(token, "credit/details", &credits_url),
            self.business(token, "coding_plan/remains", &plan_url)
        );
        let now_ms = crate::pool::unix_ms();
        Quota {
            credits: credits.map_or_else(Reading::failed, |body| credits_of(&body, now_ms)),
            plan: plan.map_or_else(Reading::failed, |body| plan_of(&body)),
        }
    }
}

impl CodeClient {
    /// One business route's answer as JSON, or what went wrong (in our
    /// words, naming the `route`: the body is never quoted).
    async fn business(&self, token: &str, route: &str, url: &str) -> Result<Value, String> {
        let (http, _in_flight) = self.http.take();
        let response = http
            .get(url)
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .header(ACCEPT, "application/json")
            .timeout(READ_TIMEOUT)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    format!("{route} did not answer within {}s", READ_TIMEOUT.as_secs())
                } else {
                    format!("{route} could not be reached")
                }
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(match status.as_u16() {
                401 => format!(
                    "{route} refused the token (HTTP 401: expired, or this network refused)"
                ),
                code => format!("{route} answered HTTP {code}"),
            });
        }
        let body = crate::upstream::read_capped(response, MAX_BODY).await;
        serde_json::from_str(&body).map_err(|_| format!("{route} answered something not JSON"))
    }
}

/// The business status of an answer: 0 (or absent) is success.
fn status_of(body: &Value) -> i64 {
    body.pointer("/base_resp/status_code")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// The balance: the remaining amounts of the grants not yet expired.
pub(crate) fn credits_of(body: &Value, now_ms: u64) -> Reading<Credits> {
    match status_of(body) {
        0 => {}
        code => return Reading::failed(format!("credit/details answered code {code}")),
    }
    let rows = body.get("details").and_then(Value::as_array);
    let (mut balance, mut grants) = (0.0_f64, 0);
    for row in rows.into_iter().flatten() {
        let expires = row.get("expire_at_ms").and_then(number).unwrap_or(0.0);
        if expires > 0.0 && expires <= now_ms as f64 {
            continue;
        }
        if let Some(amount) = row.get("remaining_amount").and_then(number) {
            balance += amount;
            grants += 1;
        }
    }
    Reading::Read(Credits {
        balance: (balance * 100.0).round() / 100.0,
        grants,
    })
}

/// The plan's windows, from its `general` resource.
pub(crate) fn plan_of(body: &Value) -> Reading<Plan> {
    match status_of(body) {
        0 => {}
        2062 => return Reading::not_readable("no Token Plan on this account (2062)"),
        1004 => {
            return Reading::not_readable(
                "the plan route does not take this account's token (1004)",
            )
        }
        code => return Reading::failed(format!("coding_plan/remains answered code {code}")),
    }
    let resources = body.get("model_remains").and_then(Value::as_array);
    let Some(general) = resources
        .into_iter()
        .flatten()
        .find(|r| r.get("model_name").and_then(Value::as_str) == Some("general"))
    else {
        return Reading::not_readable("no Token Plan on this account");
    };
    let window = |prefix: &str, start: &str, end: &str| {
        let percent = general
            .get(format!("{prefix}_remaining_percent"))
            .and_then(number)?;
        let status = general
            .get(format!("{prefix}_status"))
            .and_then(number)
            .map(|s| s as i64);
        Some(PlanWindow {
            remaining_percent: percent.clamp(0.0, 100.0),
            unlimited: status == Some(UNLIMITED),
            starts_at: general.get(start).and_then(number).map(unix_seconds),
            ends_at: general.get(end).and_then(number).map(unix_seconds),
        })
    };
    Reading::Read(Plan {
        interval: window("current_interval", "start_time", "end_time"),
        weekly: window("current_weekly", "weekly_start_time", "weekly_end_time"),
    })
}

/// A number sent as a number or a decimal string (`"800.00"`).
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|n: &f64| n.is_finite())
}

/// A time sent in milliseconds or seconds (the unit was never recorded):
/// anything past the year 5000 in seconds is milliseconds.
fn unix_seconds(t: f64) -> u64 {
    let t = t.max(0.0);
    if t > 1e11 {
        (t / 1000.0) as u64
    } else {
        t as u64
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_balance_sums_the_unexpired_grants_only() {
        let body = json!({"details": [
            {"remaining_amount": "800.00", "expire_at_ms": 4102444800000u64},
            {"remaining_amount": "12.50", "expire_at_ms": 0},
            {"remaining_amount": "99.00", "expire_at_ms": 1000},
            {"consumed_amount": "1.00"}
        ], "total_count": 4, "base_resp": {"status_code": 0}});
        assert_eq!(
            credits_of(&body, 2_000_000),
            Reading::Read(Credits {
                balance: 812.5,
                grants: 2
            })
        );
        // No `details` when there are none.
        let empty = json!({"total_count": 0, "base_resp": {"status_code": 0}});
        assert_eq!(
            credits_of(&empty, 0),
            Reading::Read(Credits {
                balance: 0.0,
                grants: 0
            })
        );
        // A failure under HTTP 200, without quoting its message.
        let failed = json!({"base_resp": {"status_code": 1004, "status_msg": "secret words"}});
        let Reading::Failed { error } = credits_of(&failed, 0) else {
            panic!("a failure")
        };
        assert!(
            error.contains("1004") && !error.contains("secret"),
            "{error}"
        );
    }

    #[test]
    fn the_plan_windows_come_from_the_general_resource() {
        let body = json!({"model_remains": [
            {"model_name": "video", "current_interval_remaining_percent": 1},
            {"model_name": "general", "start_time": 1764590400000u64, "end_time": 1764608400000u64,
             "current_interval_remaining_percent": 73.5, "current_interval_status": 1,
             "current_interval_usage_count": 400,
             "weekly_start_time": 1764547200, "weekly_end_time": 1765152000,
             "current_weekly_remaining_percent": "100", "current_weekly_status": 3}
        ], "base_resp": {"status_code": 0}});
        let Reading::Read(plan) = plan_of(&body) else {
            panic!("read")
        };
        assert_eq!(
            plan.interval,
            Some(PlanWindow {
                remaining_percent: 73.5,
                unlimited: false,
                starts_at: Some(1764590400),
                ends_at: Some(1764608400),
            })
        );
        let weekly = plan.weekly.unwrap();
        assert!(weekly.unlimited && weekly.remaining_percent == 100.0);
        assert_eq!(weekly.ends_at, Some(1765152000), "seconds stay seconds");
    }

    #[test]
    fn no_plan_and_a_refused_token_are_not_readable_other_codes_fail() {
        for (code, words) in [(2062, "no Token Plan"), (1004, "does not take")] {
            let body = json!({"base_resp": {"status_code": code, "status_msg": "x"}});
            match plan_of(&body) {
                Reading::NotReadable { readable, reason } => {
                    assert!(!readable && reason.contains(words), "{reason}")
                }
                other => panic!("{code}: {other:?}"),
            }
        }
        let body = json!({"base_resp": {"status_code": 1000, "status_msg": "x"}});
        assert!(matches!(plan_of(&body), Reading::Failed { .. }));
        let body = json!({"model_remains": [], "base_resp": {"status_code": 0}});
        assert!(matches!(plan_of(&body), Reading::NotReadable { .. }));
    }

    #[test]
    fn a_reading_serializes_flat() {
        let read = Reading::Read(Credits {
            balance: 1.5,
            grants: 1,
        });
        assert_eq!(
            serde_json::to_value(read).unwrap(),
            json!({"balance": 1.5, "grants": 1})
        );
        let none: Reading<Credits> = Reading::not_readable("why");
        assert_eq!(
            serde_json::to_value(none).unwrap(),
            json!({"readable": false, "reason": "why"})
        );
        let failed: Reading<Credits> = Reading::failed("what");
        assert_eq!(
            serde_json::to_value(failed).unwrap(),
            json!({"error": "what"})
        );
    }

    /// The HTTP half against a loopback stand-in: the bearer goes to both
    /// hosts, a 401 is a failure in our words, a 200 is read.
    #[tokio::test]
    async fn both_routes_are_asked_with_the_bearer_and_a_refusal_is_reported_plainly() {
        use axum::http::{HeaderMap, StatusCode};
        use axum::routing::get;

        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let log = seen.clone();
        let app = axum::Router::new()
            .route(
                "/minimax-cloud/api/v1/credit/details",
                get(move |h: HeaderMap| async move {
                    let bearer = h["authorization"].to_str().unwrap().to_string();
                    log.lock().unwrap().push(bearer);
                    axum::Json(json!({"details": [{"remaining_amount": "5.25"}],
                        "base_resp": {"status_code": 0}}))
                }),
            )
            .route(
                "/v1/api/openplatform/coding_plan/remains",
                get(|| async { (StatusCode::UNAUTHORIZED, "raw upstream words") }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let config = crate::settings::from_pairs(
            &[
                ("MINIMAX_CODE_BASE_URL", url.as_str()),
                ("MINIMAX_CODE_ACCOUNT_URL", url.as_str()),
                ("MINIMAX_CODE_PLATFORM_URL", url.as_str()),
            ],
            super::super::CodeConfig::from_lookup,
        );
        let client = CodeClient::new(config).unwrap();
        let quota = client.quota("mmoat_live").await;
        assert_eq!(
            quota.credits,
            Reading::Read(Credits {
                balance: 5.25,
                grants: 1
            })
        );
        let Reading::Failed { error } = quota.plan else {
            panic!("{:?}", quota.plan)
        };
        assert!(error.contains("401") && !error.contains("raw"), "{error}");
        assert_eq!(*seen.lock().unwrap(), ["Bearer mmoat_live"]);

        // A refresh token is never sent anywhere.
        let quota = client.quota("mmort_spent").await;
        assert!(matches!(quota.credits, Reading::NotReadable { .. }));
        assert_eq!(seen.lock().unwrap().len(), 1);
    }
}
