//! A fault-injecting HTTP proxy between the agent and a real S3 server, for the tests of what
//! the agent does when S3 misbehaves: it forwards every request as it came (Host header and
//! SigV4 signature intact), except those matching a [`Fault`], which it answers with an S3
//! error, cuts it before forwarding, or forwards it and then cuts before answering (the server acted,
//! the client never hears it: what makes an SDK retry a write that already happened).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What to do with a matching request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Forward it, let the server act on it, then close the connection without answering.
    DropResponse,
    /// Close the connection without forwarding it (a connection reset mid-request).
    Reset,
    /// Answer with this HTTP status and S3 error code, without forwarding it.
    Respond(u16, &'static str),
}

/// Which requests to disturb, how, and how many times.
#[derive(Debug, Clone)]
pub struct Fault {
    pub method: &'static str,
    /// A substring of the path (`/bucket/key`), or with a leading `*`, its end.
    pub path: String,
    /// Matches only requests whose query has none of these parameters (e.g. `uploadId`, so
    /// that a single-request PUT is told from a multipart part)...
    pub query_lacks: Vec<&'static str>,
    /// ... and, if set, has this one (`name`, or `name=value`).
    pub query_has: Option<String>,
    pub action: Action,
    /// How many matching requests to disturb; the rest pass.
    pub times: usize,
}

impl Fault {
    /// A single-request PutObject of a key matching `path` (see [`Fault::path`]).
    pub fn put_object(path: &str, action: Action, times: usize) -> Fault {
        Fault {
            method: "PUT",
            path: path.to_owned(),
            query_lacks: vec![
                "uploadId",
                "partNumber",
                "retention",
                "legal-hold",
                "tagging",
            ],
            query_has: None,
            action,
            times,
        }
    }

    /// UploadPart `number` of a multipart upload of a key matching `path`.
    pub fn upload_part(path: &str, number: i32, action: Action, times: usize) -> Fault {
        Fault {
            method: "PUT",
            path: path.to_owned(),
            query_lacks: Vec::new(),
            query_has: Some(format!("partNumber={number}")),
            action,
            times,
        }
    }

    fn matches(&self, method: &str, path: &str, query: &str) -> bool {
        let params: Vec<(&str, &str)> = query
            .split('&')
            .map(|p| (p, p.split('=').next().unwrap_or("")))
            .collect();
        method == self.method
            && path_matches(path, &self.path)
            && !params
                .iter()
                .any(|(_, name)| self.query_lacks.contains(name))
            && self.query_has.as_deref().is_none_or(|wanted| {
                params
                    .iter()
                    .any(|(param, name)| *param == wanted || *name == wanted)
            })
    }
}

#[derive(Default)]
struct Shared {
    faults: Vec<Fault>,
    /// Method, path and query of every request, and what was done with it.
    seen: Vec<(String, String, String, Option<Action>)>,
}

/// `pattern` is a substring of `path`, or with a leading `*`, its end.
fn path_matches(path: &str, pattern: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(end) => path.ends_with(end),
        None => path.contains(pattern),
    }
}

/// A running proxy; dropping it does not stop it (it lives as long as the test's runtime).
#[derive(Clone)]
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`: give this to the agent as `s3.endpoint`.
    pub url: String,
    shared: Arc<Mutex<Shared>>,
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Mutex::new(Shared::default()));
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let upstream = upstream.trim_end_matches('/').to_owned();
        let state = Arc::clone(&shared);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let _ = stream.set_nodelay(true);
                let (state, client, upstream) =
                    (Arc::clone(&state), client.clone(), upstream.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        handle(req, Arc::clone(&state), client.clone(), upstream.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FaultProxy { url, shared }
    }

    pub fn add(&self, fault: Fault) {
        self.shared.lock().unwrap().faults.push(fault);
    }

    /// Requests seen with `method` whose path matches `path` (see [`Fault::path`]).
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.shared
            .lock()
            .unwrap()
            .seen
            .iter()
            .filter(|(m, p, _, _)| m == method && path_matches(p, path))
            .count()
    }

    /// ListObjectsV2 requests seen (`GET /bucket?list-type=2...`).
    pub fn listings(&self) -> usize {
        self.shared
            .lock()
            .unwrap()
            .seen
            .iter()
            .filter(|(m, _, q, _)| m == "GET" && q.split('&').any(|p| p == "list-type=2"))
            .count()
    }

    /// Requests that a fault disturbed, for messages.
    pub fn disturbed(&self) -> Vec<String> {
        self.shared
            .lock()
            .unwrap()
            .seen
            .iter()
            .filter_map(|(m, p, _, a)| a.map(|a| format!("{m} {p}: {a:?}")))
            .collect()
    }
}

/// The connection is closed without an answer when the service fails.
#[derive(Debug)]
struct Cut;

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fault proxy: connection cut")
    }
}

impl std::error::Error for Cut {}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Mutex<Shared>>,
    client: Client<HttpConnector, Full<Bytes>>,
    upstream: String,
) -> Result<Response<Full<Bytes>>, Cut> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let action = {
        let mut s = shared.lock().unwrap();
        let action = s
            .faults
            .iter_mut()
            .find(|f| f.times > 0 && f.matches(&method, &path, &query))
            .map(|f| {
                f.times -= 1;
                f.action
            });
        s.seen
            .push((method.clone(), path.clone(), query.clone(), action));
        action
    };
    if action == Some(Action::Reset) {
        return Err(Cut);
    }
    if let Some(Action::Respond(status, code)) = action {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>\
             <Message>injected by the test's fault proxy</Message></Error>"
        );
        return Ok(Response::builder()
            .status(status)
            .header("content-type", "application/xml")
            .body(Full::new(Bytes::from(body)))
            .unwrap());
    }
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(|_| Cut)?.to_bytes();
    let mut forward = Request::builder()
        .method(parts.method)
        .uri(format!("{upstream}{}", parts.uri.path_and_query().unwrap()));
    for (name, value) in &parts.headers {
        forward = forward.header(name, value);
    }
    let response = client
        .request(forward.body(Full::new(body)).unwrap())
        .await
        .map_err(|_| Cut)?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|_| Cut)?.to_bytes();
    if action == Some(Action::DropResponse) {
        return Err(Cut);
    }
    let mut answer = Response::builder().status(parts.status);
    for (name, value) in &parts.headers {
        if name != "transfer-encoding" && name != "connection" {
            answer = answer.header(name, value);
        }
    }
    Ok(answer.body(Full::new(body)).unwrap())
}
