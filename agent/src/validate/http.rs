//! HTTP smoke checks against the application after a restore (the runbook's `/health` and
//! `/map` on known inputs). Each check is retried until it passes or the shared deadline ends,
//! so an application that is still starting against the restored database is waited for.
//! Plain `http://` only: the checks call the application's in-cluster Service.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{CheckKind, CheckResult};
use crate::config::HttpCheck;

/// Response bodies larger than this are not read (a smoke check needs a few bytes).
const BODY_LIMIT: usize = 1024 * 1024;
/// One attempt may take this long at most.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Runs every check, retrying each until it passes or `timeout` (shared) runs out.
pub async fn http_checks(
    checks: &[HttpCheck],
    timeout: Duration,
    interval: Duration,
) -> Vec<CheckResult> {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let deadline = Instant::now() + timeout;
    let mut results = Vec::with_capacity(checks.len());
    for check in checks {
        let mut attempts = 0;
        let outcome = loop {
            attempts += 1;
            let outcome = attempt(&client, check).await;
            if outcome.is_ok() || Instant::now() + interval >= deadline {
                break outcome;
            }
            tracing::info!(check = %check.name, attempt = attempts,
                problem = %outcome.as_ref().err().map_or("", String::as_str),
                "smoke check not passing yet; retrying");
            tokio::time::sleep(interval).await;
        };
        let expected = describe(check);
        results.push(match outcome {
            Ok(actual) => CheckResult {
                kind: CheckKind::Http,
                name: check.name.clone(),
                expected,
                actual: format!("{actual} (attempt {attempts})"),
                passed: true,
            },
            Err(problem) => CheckResult {
                kind: CheckKind::Http,
                name: check.name.clone(),
                expected,
                actual: format!("{problem} (after {attempts} attempts)"),
                passed: false,
            },
        });
    }
    results
}

fn describe(check: &HttpCheck) -> String {
    let mut text = format!("{} {} -> {}", check.method, check.url, check.expect_status);
    if let Some(needle) = &check.expect_body_contains {
        text.push_str(&format!(", body contains {needle:?}"));
    }
    if let Some(json) = &check.expect_json {
        text.push_str(&format!(", JSON includes {json}"));
    }
    text
}

/// One request; `Ok` describes what passed, `Err` what did not.
async fn attempt(client: &HttpClient, check: &HttpCheck) -> Result<String, String> {
    let mut request = hyper::Request::builder()
        .method(check.method.as_str())
        .uri(&check.url);
    for (name, value) in &check.headers {
        request = request.header(name, value);
    }
    let body = Bytes::from(check.body.clone().unwrap_or_default());
    let request = request
        .body(Full::new(body))
        .map_err(|e| format!("invalid request: {e}"))?;
    let response = tokio::time::timeout(ATTEMPT_TIMEOUT, client.request(request))
        .await
        .map_err(|_| format!("no answer within {}s", ATTEMPT_TIMEOUT.as_secs()))?
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), BODY_LIMIT)
        .collect()
        .await
        .map_err(|e| format!("reading the body failed: {e}"))?
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    if status != check.expect_status {
        return Err(format!("status {status}, body {:?}", excerpt(&text)));
    }
    if let Some(needle) = &check.expect_body_contains
        && !text.contains(needle.as_str())
    {
        return Err(format!(
            "status {status}, body {:?} lacks {needle:?}",
            excerpt(&text)
        ));
    }
    if let Some(want) = &check.expect_json {
        let got: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            format!(
                "status {status}, body is not JSON ({e}): {:?}",
                excerpt(&text)
            )
        })?;
        if !json_includes(&got, want) {
            return Err(format!(
                "status {status}, JSON {got} does not include {want}"
            ));
        }
    }
    Ok(format!("status {status}"))
}

fn excerpt(text: &str) -> String {
    text.chars().take(200).collect()
}

/// Whether `got` has everything in `want`: objects by key (recursively), other values equal.
pub fn json_includes(got: &serde_json::Value, want: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (got, want) {
        (Value::Object(got), Value::Object(want)) => want
            .iter()
            .all(|(k, w)| got.get(k).is_some_and(|g| json_includes(g, w))),
        (Value::Array(got), Value::Array(want)) => {
            got.len() == want.len() && got.iter().zip(want).all(|(g, w)| json_includes(g, w))
        }
        _ => got == want,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_inclusion_is_by_key_and_recursive() {
        let got = json!({"output": "b", "meta": {"ms": 3, "v": 1}, "list": [1, {"a": 1, "b": 2}]});
        assert!(json_includes(&got, &json!({"output": "b"})));
        assert!(json_includes(&got, &json!({"meta": {"v": 1}})));
        assert!(json_includes(&got, &json!({"list": [1, {"a": 1}]})));
        assert!(!json_includes(&got, &json!({"output": "c"})));
        assert!(!json_includes(&got, &json!({"missing": null})));
        assert!(!json_includes(&got, &json!({"list": [1]})));
    }

    #[tokio::test]
    async fn an_unreachable_application_fails_after_the_timeout_with_the_reason() {
        let check = HttpCheck {
            name: "health".into(),
            method: "GET".into(),
            url: "http://127.0.0.1:1/health".into(),
            headers: Default::default(),
            body: None,
            expect_status: 200,
            expect_body_contains: None,
            expect_json: None,
        };
        let started = Instant::now();
        let results = http_checks(
            &[check],
            Duration::from_millis(300),
            Duration::from_millis(100),
        )
        .await;
        assert!(!results[0].passed);
        assert!(
            results[0].actual.contains("request failed"),
            "{:?}",
            results[0]
        );
        assert!(results[0].actual.contains("attempts"), "{:?}", results[0]);
        assert!(started.elapsed() >= Duration::from_millis(200));
    }
}
