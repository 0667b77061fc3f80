//! `strongroom status`: reads a running agent's `/status` (e.g. through `kubectl
//! port-forward`) and prints a compact table; fails when an enabled engine has no success
//! younger than `--max-age`, so scripts and CI can use it.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::list::human_size;
use crate::state::StatusDoc;

/// Fetches `<url>/status`.
pub async fn fetch(url: &str) -> Result<StatusDoc> {
    let target = format!("{}/status", url.trim_end_matches('/'));
    let unreachable = |detail: String| Error::StatusUnreachable {
        url: target.clone(),
        detail,
    };
    let uri: hyper::Uri = target
        .parse()
        .map_err(|e| unreachable(format!("not a URL ({e})")))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
        .await
        .map_err(|_| unreachable("no answer within 10s".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    if !response.status().is_success() {
        return Err(unreachable(format!("HTTP {}", response.status())));
    }
    let body = Limited::new(response.into_body(), 16 * 1024 * 1024)
        .collect()
        .await
        .map_err(|e| unreachable(e.to_string()))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| unreachable(format!("not a status document ({e})")))
}

fn age(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// The table, and the engines whose last success is missing or older than `max_age`.
pub fn render(doc: &StatusDoc, now: OffsetDateTime, max_age: Duration) -> (String, Vec<String>) {
    let mut out = format!(
        "agent {}  config {}  {}\n",
        doc.version,
        doc.config_digest,
        if doc.ready {
            "ready".to_owned()
        } else {
            format!("NOT READY: {}", doc.waiting_for.join("; "))
        }
    );
    out.push_str(&format!(
        "{:<11} {:<8} {:<21} {:>6} {:>10} {:<21} {:>8}  {}\n",
        "ENGINE", "STATE", "LAST SUCCESS", "AGE", "SIZE", "NEXT RUN", "FAILURES", "LAST ERROR"
    ));
    let mut stale = Vec::new();
    for (engine, e) in &doc.engines {
        if e.schedule.is_none() {
            continue;
        }
        let success_age = e
            .last_success
            .as_ref()
            .map(|s| (now - s.finished_at).as_seconds_f64());
        if success_age.is_none_or(|a| a > max_age.as_secs_f64()) {
            stale.push(engine.as_str().to_owned());
        }
        let state = match &e.running {
            Some(r) => format!(
                "running {}%",
                match r.estimated_total_bytes {
                    Some(total) if total > 0 => (100 * r.bytes_read / total).min(99).to_string(),
                    _ => "?".into(),
                }
            ),
            None => e.state.clone(),
        };
        let error = e
            .last_attempt
            .as_ref()
            .filter(|a| !a.success)
            .and_then(|a| a.error.clone())
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<11} {:<8} {:<21} {:>6} {:>10} {:<21} {:>8}  {}\n",
            engine.as_str(),
            state,
            e.last_success
                .as_ref()
                .map_or("never".into(), |s| crate::layout::Timestamp::new(
                    s.finished_at
                )
                .to_string()),
            success_age.map_or("-".into(), age),
            e.last_success
                .as_ref()
                .and_then(|s| s.size_bytes)
                .map_or("-".into(), human_size),
            e.next_run
                .map_or("-".into(), |t| crate::layout::Timestamp::new(t).to_string()),
            e.consecutive_failures,
            error.chars().take(120).collect::<String>(),
        ));
    }
    for (engine, d) in &doc.drills {
        let last = match (&d.last, &d.last_error) {
            (Some(l), _) => format!(
                "{} {:?} RTO {} (goal {}) RPO {}",
                crate::layout::Timestamp::new(l.incident_start),
                l.verdict,
                l.rto_seconds
                    .map_or("-".into(), crate::drill::report::seconds),
                crate::drill::report::seconds(l.rto_goal_seconds),
                l.rpo_seconds
                    .map_or("-".into(), crate::drill::report::seconds),
            ),
            (None, Some(e)) => {
                format!("could not run: {}", e.chars().take(120).collect::<String>())
            }
            (None, None) => "none yet".into(),
        };
        out.push_str(&format!(
            "drill {:<11} {}  last: {last}  next: {}\n",
            engine.as_str(),
            if d.running { "running" } else { "idle" },
            d.next_run
                .map_or("-".into(), |t| crate::layout::Timestamp::new(t).to_string()),
        ));
    }
    (out, stale)
}
