//! The agent's HTTP endpoints, on one listener (`daemon.listen`, default `0.0.0.0:9550`):
//!
//! - `GET /healthz`: liveness. Answering at all proves the process and its runtime work; it
//!   never fails because the database, S3 or a backup failed (a restart fixes none of those).
//! - `GET /readyz`: readiness: database answers, bucket reachable (cached), no restore running
//!   into this database. Never depends on backup age.
//! - `GET /status`: the [`StatusDoc`](crate::state::StatusDoc) JSON; no secrets.
//! - `GET /backup/last?max_age=26h`: 200 if every enabled engine's last success is younger,
//!   503 otherwise; for external monitors and `kubectl port-forward`, never for probes.
//! - `GET /metrics`: Prometheus (OpenMetrics) text.
//! - `POST /backup?engine=postgresql|clickhouse`: run one now; off unless `daemon.trigger_token_file` is
//!   set, needs `Authorization: Bearer <token>`, refused while that engine runs.
//!
//! [`respond`] maps a request to a response without I/O, so handlers are tested directly;
//! [`serve`] runs them on an already-bound listener until its shutdown token fires.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Config;
use crate::layout::Engine;
use crate::metrics::Metrics;
use crate::state::{AgentState, Trigger};

/// `max_age` when `/backup/last` is called without one: a daily schedule plus slack.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(26 * 3600);

/// What the endpoints read and the trigger writes.
pub struct App {
    pub state: Arc<AgentState>,
    pub metrics: Arc<Metrics>,
    pub config: watch::Receiver<Arc<Config>>,
    pub triggers: BTreeMap<Engine, mpsc::Sender<Trigger>>,
    pub clock: Clock,
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("cache-control", "no-store")
        .body(Full::new(body.into()))
        .expect("a static response is valid")
}

fn json_reply(status: StatusCode, value: &serde_json::Value) -> Reply {
    reply(status, "application/json", value.to_string())
}

/// The engines the current config enables.
pub fn enabled_engines(config: &Config) -> Vec<Engine> {
    let mut engines = Vec::new();
    if config.postgresql.is_some() {
        engines.push(Engine::Postgresql);
    }
    if config.clickhouse.is_some() {
        engines.push(Engine::Clickhouse);
    }
    engines
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Equal-length, constant-time comparison (only the length can leak).
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Maps one request to its response. No I/O beyond reading the trigger token file on POST.
pub fn respond(
    app: &App,
    method: &Method,
    path: &str,
    query: Option<&str>,
    authorization: Option<&str>,
) -> Reply {
    match (method, path) {
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", "ok\n"),
        (&Method::GET, "/readyz") => {
            let (ready, waiting_for) = app.state.readiness();
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json_reply(
                status,
                &json!({ "ready": ready, "waiting_for": waiting_for }),
            )
        }
        (&Method::GET, "/status") => {
            let doc = app.state.status(app.clock.now());
            reply(
                StatusCode::OK,
                "application/json",
                serde_json::to_vec_pretty(&doc).expect("serialisable"),
            )
        }
        (&Method::GET, "/backup/last") => last_backup(app, query),
        (&Method::GET, "/metrics") => {
            let engines = enabled_engines(&app.config.borrow());
            reply(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                app.metrics.render(&app.state, &engines),
            )
        }
        (&Method::POST, "/backup") => trigger(app, query, authorization),
        (_, "/healthz" | "/readyz" | "/status" | "/backup/last" | "/metrics" | "/backup") => {
            json_reply(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": format!("{method} is not allowed on {path}")}),
            )
        }
        _ => json_reply(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no endpoint {path}; see /status, /readyz, /healthz, /metrics, /backup/last")}),
        ),
    }
}

fn last_backup(app: &App, query: Option<&str>) -> Reply {
    let max_age = match query_param(query, "max_age").map(humantime::parse_duration) {
        None => DEFAULT_MAX_AGE,
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            return json_reply(
                StatusCode::BAD_REQUEST,
                &json!({"error": format!("max_age: {e}; use e.g. 26h, 90m, 2d")}),
            );
        }
    };
    let now = app.clock.now();
    let status = app.state.status(now);
    let mut all_fresh = true;
    let mut engines = serde_json::Map::new();
    for engine in enabled_engines(&app.config.borrow()) {
        let last = status
            .engines
            .get(&engine)
            .and_then(|e| e.last_success.as_ref());
        let age = last.map(|l| (now - l.finished_at).as_seconds_f64());
        let fresh = age.is_some_and(|a| a <= max_age.as_secs_f64());
        all_fresh &= fresh;
        engines.insert(
            engine.as_str().into(),
            json!({
                "fresh": fresh,
                "last_success": last.map(|l| l.finished_at.to_string()),
                "key": last.and_then(|l| l.key.clone()),
                "age_seconds": age,
            }),
        );
    }
    let code = if all_fresh {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_reply(
        code,
        &json!({ "fresh": all_fresh, "max_age_seconds": max_age.as_secs(), "engines": engines }),
    )
}

fn trigger(app: &App, query: Option<&str>, authorization: Option<&str>) -> Reply {
    let config = app.config.borrow().clone();
    let token = match config.daemon.trigger_token() {
        Ok(Some(token)) => token,
        Ok(None) => {
            return json_reply(
                StatusCode::FORBIDDEN,
                &json!({"error": "the backup trigger is off: set daemon.trigger_token_file"}),
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read the trigger token");
            return json_reply(
                StatusCode::FORBIDDEN,
                &json!({"error": "the trigger token cannot be read; see the agent's log"}),
            );
        }
    };
    let presented = authorization.and_then(|h| h.strip_prefix("Bearer "));
    if !presented.is_some_and(|p| same_secret(p.as_bytes(), token.as_bytes())) {
        return json_reply(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "missing or wrong bearer token"}),
        );
    }
    let engine = match query_param(query, "engine") {
        Some("postgresql") => Engine::Postgresql,
        Some("clickhouse") => Engine::Clickhouse,
        other => {
            return json_reply(
                StatusCode::BAD_REQUEST,
                &json!({
                    "error": format!("engine={other:?}: use engine=postgresql or engine=clickhouse")
                }),
            );
        }
    };
    if !enabled_engines(&config).contains(&engine) {
        return json_reply(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("{engine} is not configured")}),
        );
    }
    if app.state.is_running(engine) {
        return json_reply(
            StatusCode::CONFLICT,
            &json!({"error": format!("a {engine} backup is already running")}),
        );
    }
    match app
        .triggers
        .get(&engine)
        .map(|t| t.try_send(Trigger::Manual))
    {
        Some(Ok(())) => json_reply(
            StatusCode::ACCEPTED,
            &json!({"accepted": true, "engine": engine}),
        ),
        _ => json_reply(
            StatusCode::CONFLICT,
            &json!({"error": format!("a {engine} backup was already requested")}),
        ),
    }
}

/// Serves the endpoints on `listener` until `shutdown` fires, then lets open requests finish
/// (up to 5 seconds).
pub async fn serve(listener: TcpListener, app: Arc<App>, shutdown: CancellationToken) {
    use hyper_util::rt::TokioIo;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = Arc::clone(&app);
        let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let app = Arc::clone(&app);
            async move {
                let auth = req
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok());
                let uri = req.uri();
                Ok::<_, std::convert::Infallible>(respond(
                    &app,
                    req.method(),
                    uri.path(),
                    uri.query(),
                    auth,
                ))
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("HTTP drained"),
        _ = tokio::time::sleep(Duration::from_secs(5)) => {
            tracing::warn!("HTTP connections still open after 5s; closing them");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Progress;
    use crate::state::{Check, RunRecord};
    use http_body_util::BodyExt as _;
    use time::macros::datetime;

    fn app(extra: &str) -> (App, mpsc::Receiver<Trigger>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let yaml = format!(
            "release: r\ns3:\n  bucket: b-1\npostgresql:\n  database: app\n{}",
            extra.replace("TOKEN", &token.display().to_string())
        );
        let config = Config::from_yaml(&yaml, std::path::Path::new("t")).unwrap();
        let (_, rx) = watch::channel(Arc::new(config));
        let (trigger_tx, trigger_rx) = mpsc::channel(1);
        let now = datetime!(2026-11-23 12:00:00 UTC);
        let app = App {
            state: Arc::new(AgentState::new("d".into(), true, now)),
            metrics: Arc::new(Metrics::new()),
            config: rx,
            triggers: [(Engine::Postgresql, trigger_tx)].into(),
            clock: Clock::Tokio {
                origin: now,
                instant: tokio::time::Instant::now(),
            },
        };
        (app, trigger_rx, dir)
    }

    fn body(reply: Reply) -> (StatusCode, String) {
        let status = reply.status();
        let bytes = futures::executor::block_on(reply.into_body().collect())
            .unwrap()
            .to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    fn get(app: &App, path: &str, query: Option<&str>) -> (StatusCode, String) {
        body(respond(app, &Method::GET, path, query, None))
    }

    #[tokio::test]
    async fn liveness_never_depends_on_dependencies_readiness_does() {
        let (app, _, _dir) = app("");
        assert_eq!(get(&app, "/healthz", None).0, StatusCode::OK);
        let (status, text) = get(&app, "/readyz", None);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(text.contains("database: not checked yet"), "{text}");
        let ok = Check {
            ok: true,
            detail: "ok".into(),
            checked_at: None,
        };
        app.state.set_database(ok.clone(), false);
        app.state.set_s3(ok.clone());
        let (status, text) = get(&app, "/readyz", None);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(text.contains("clickhouse: not checked yet"), "{text}");
        app.state.set_clickhouse(ok, false);
        assert_eq!(get(&app, "/readyz", None).0, StatusCode::OK);
        assert_eq!(get(&app, "/healthz", None).0, StatusCode::OK);
    }

    #[tokio::test]
    async fn last_backup_is_fresh_only_within_max_age() {
        let (app, _, _dir) = app("");
        let (status, text) = get(&app, "/backup/last", None);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
        app.state.seed_last_success(
            Engine::Postgresql,
            RunRecord {
                started_at: datetime!(2026-11-23 02:00:00 UTC),
                finished_at: datetime!(2026-11-23 02:10:00 UTC),
                trigger: None,
                success: true,
                key: Some("k".into()),
                size_bytes: Some(1),
                uncompressed_size_bytes: None,
                duration_seconds: 600.0,
                error: None,
            },
        );
        assert_eq!(
            get(&app, "/backup/last", Some("max_age=26h")).0,
            StatusCode::OK
        );
        let (status, text) = get(&app, "/backup/last", Some("max_age=9h"));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(text.contains("\"age_seconds\":35400"), "{text}");
        assert_eq!(
            get(&app, "/backup/last", Some("max_age=soon")).0,
            StatusCode::BAD_REQUEST
        );
    }

    #[tokio::test]
    async fn status_and_metrics_hold_no_secrets() {
        let (app, _, _dir) = app("daemon:\n  trigger_token_file: TOKEN\n");
        let (status, text) = get(&app, "/status", None);
        assert_eq!(status, StatusCode::OK);
        let doc: crate::state::StatusDoc = serde_json::from_str(&text).unwrap();
        assert_eq!(doc.config_digest, "d");
        assert!(!text.contains("s3cret"));
        let (status, text) = get(&app, "/metrics", None);
        assert_eq!(status, StatusCode::OK);
        assert!(text.contains("strongroom_ready 0"), "{text}");
        assert!(!text.contains("s3cret"));
        assert_eq!(get(&app, "/nope", None).0, StatusCode::NOT_FOUND);
        assert_eq!(
            body(respond(&app, &Method::DELETE, "/status", None, None)).0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[tokio::test]
    async fn the_trigger_is_off_without_a_token_and_checks_it() {
        let post = |app: &App, auth: Option<&str>| {
            body(respond(
                app,
                &Method::POST,
                "/backup",
                Some("engine=postgresql"),
                auth,
            ))
            .0
        };
        let (off, _, _dir) = app("");
        assert_eq!(post(&off, Some("Bearer s3cret")), StatusCode::FORBIDDEN);
        let (on, mut triggers, _dir) = app("daemon:\n  trigger_token_file: TOKEN\n");
        assert_eq!(post(&on, None), StatusCode::UNAUTHORIZED);
        assert_eq!(post(&on, Some("Bearer s3cre")), StatusCode::UNAUTHORIZED);
        assert_eq!(post(&on, Some("Bearer s3cret")), StatusCode::ACCEPTED);
        assert_eq!(triggers.try_recv().unwrap(), Trigger::Manual);
        on.state.try_start(
            Engine::Postgresql,
            Trigger::Manual,
            Arc::new(Progress::default()),
            on.clock.now(),
        );
        assert_eq!(post(&on, Some("Bearer s3cret")), StatusCode::CONFLICT);
    }

    #[tokio::test]
    async fn the_trigger_starts_clickhouse_too() {
        let extra = "clickhouse:\n  named_collection: s3\ndaemon:\n  trigger_token_file: TOKEN\n";
        let (mut app, _, _dir) = app(extra);
        let (tx, mut clickhouse) = mpsc::channel(1);
        app.triggers.insert(Engine::Clickhouse, tx);
        let post = |query| {
            body(respond(
                &app,
                &Method::POST,
                "/backup",
                Some(query),
                Some("Bearer s3cret"),
            ))
            .0
        };
        assert_eq!(post("engine=clickhouse"), StatusCode::ACCEPTED);
        assert_eq!(clickhouse.try_recv().unwrap(), Trigger::Manual);
        assert_eq!(post("engine=mysql"), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn an_empty_token_file_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "\n").unwrap();
        let yaml = format!(
            "release: r\ns3:\n  bucket: b-1\npostgresql:\n  database: app\ndaemon:\n  \
             trigger_token_file: {}\n",
            token.display()
        );
        let config = Config::from_yaml(&yaml, std::path::Path::new("t")).unwrap();
        let e = config.daemon.trigger_token().unwrap_err().to_string();
        assert!(
            e.contains("daemon.trigger_token_file") && e.contains("is empty"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn served_over_a_real_socket_and_drained_on_shutdown() {
        let (app, _, _dir) = app("");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, Arc::new(app), shutdown.clone()));
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.ends_with("ok\n"), "{answer}");
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(6), server)
            .await
            .unwrap()
            .unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
