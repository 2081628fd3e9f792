//! The guarded forward proxy every browse context uses (invariant 6). Chromium sends each request
//! of the page through it (HTTP CONNECT for https and WebSockets, absolute-form for plain http,
//! workers and service workers included); the proxy resolves the host itself, checks every
//! address with the [`Guard`], connects to exactly the checked address (no DNS-rebinding window),
//! and counts the bytes the page loads against its budget. One proxy per browse, so a budget and
//! a refusal log belong to one page; dropping it closes every connection it holds.

use crate::guard::{Guard, Refusal};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Longest wait for a TCP connection to an upstream server (per address tried).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for an upstream server's response head.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Events kept per proxy; a hostile page can make thousands of requests.
const MAX_EVENTS: usize = 200;
/// The response header that marks an answer the proxy made itself.
pub const GUARD_HEADER: &str = "x-conclave-guard";

type ProxyBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Something the proxy did instead of forwarding a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyEvent {
    /// The guard refused the host (blocked address, bad scheme, DNS failure).
    Refused { host: String, port: u16, refusal: Refusal },
    /// No checked address of the host accepted a connection.
    Unreachable { host: String, port: u16, detail: String },
}

/// What one page did through its proxy.
#[derive(Debug, Clone, Default)]
pub struct ProxyReport {
    pub events: Vec<ProxyEvent>,
    /// Bytes received from upstream servers.
    pub bytes: u64,
    /// The page went past its byte budget (its connections were cut).
    pub over_budget: bool,
}

impl ProxyReport {
    /// The last event about `host:port` (the page's own address, a redirect target).
    pub fn event_for(&self, host: &str, port: u16) -> Option<&ProxyEvent> {
        self.events.iter().rev().find(|e| match e {
            ProxyEvent::Refused { host: h, port: p, .. } | ProxyEvent::Unreachable { host: h, port: p, .. } => {
                h == host && *p == port
            }
        })
    }
}

struct State {
    guard: Guard,
    budget: u64,
    used: AtomicU64,
    over: AtomicBool,
    events: Mutex<Vec<ProxyEvent>>,
    stop: CancellationToken,
    /// Cancelled when the page goes past its budget.
    exceeded: CancellationToken,
}

impl State {
    fn record(&self, event: ProxyEvent) {
        match &event {
            ProxyEvent::Refused { host, port, refusal } => {
                tracing::warn!(%host, port, reason = %refusal, "browser: request refused by the guard");
            }
            ProxyEvent::Unreachable { host, port, detail } => {
                tracing::debug!(%host, port, %detail, "browser: upstream unreachable");
            }
        }
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if events.len() < MAX_EVENTS {
            events.push(event);
        }
    }

    /// Counts `n` bytes from upstream; `false` once the page is over its budget.
    fn count(&self, n: usize) -> bool {
        let used = self.used.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if used > self.budget {
            if !self.over.swap(true, Ordering::Relaxed) {
                self.exceeded.cancel();
                tracing::warn!(budget = self.budget, "browser: page went past its byte budget; connections cut");
            }
            return false;
        }
        true
    }

    fn is_over(&self) -> bool {
        self.over.load(Ordering::Relaxed)
    }
}

/// A running proxy on 127.0.0.1; stops (closing every connection) when dropped.
pub struct GuardProxy {
    addr: SocketAddr,
    state: Arc<State>,
}

impl GuardProxy {
    /// Starts a proxy on `127.0.0.1:0` enforcing `guard` and a budget of `max_bytes`.
    pub async fn start(guard: Guard, max_bytes: u64) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            guard,
            budget: max_bytes,
            used: AtomicU64::new(0),
            over: AtomicBool::new(false),
            events: Mutex::new(Vec::new()),
            stop: CancellationToken::new(),
            exceeded: CancellationToken::new(),
        });
        tokio::spawn(accept_loop(listener, state.clone()));
        Ok(Self { addr, state })
    }

    /// `http://127.0.0.1:PORT`, the value for Chromium's `proxyServer`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Resolves when the page goes past its byte budget.
    pub async fn exceeded(&self) {
        self.state.exceeded.cancelled().await
    }

    pub fn report(&self) -> ProxyReport {
        ProxyReport {
            events: self.state.events.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            bytes: self.state.used.load(Ordering::Relaxed),
            over_budget: self.state.is_over(),
        }
    }
}

impl Drop for GuardProxy {
    fn drop(&mut self) {
        self.state.stop.cancel();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let (stream, _) = tokio::select! {
            _ = state.stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "browser proxy: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        tokio::spawn(async move {
            let stop = state.stop.clone();
            let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = conn => {}
            }
        });
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<ProxyBody>, std::convert::Infallible> {
    Ok(if req.method() == Method::CONNECT { connect(state, req).await } else { forward(state, req).await })
}

/// The host and port a request is for: CONNECT's authority or the absolute-form URL, parsed the
/// way browsers parse them (every IP spelling becomes its address).
fn target(req: &Request<Incoming>) -> Option<url::Url> {
    if req.method() == Method::CONNECT {
        let authority = req.uri().authority()?;
        authority.port_u16()?;
        url::Url::parse(&format!("https://{authority}/")).ok()
    } else {
        url::Url::parse(&req.uri().to_string()).ok()
    }
}

/// Resolves and checks the request's host; the refusal response when it may not be reached.
async fn checked_addrs(state: &State, url: &url::Url) -> Result<(String, u16, Vec<SocketAddr>), Response<ProxyBody>> {
    let host = url.host_str().unwrap_or_default().to_owned();
    let port = url.port_or_known_default().unwrap_or(0);
    if state.is_over() {
        return Err(refusal_response(StatusCode::FORBIDDEN, "budget", "the page went past its byte budget"));
    }
    let checked = match state.guard.check_url(url) {
        Ok((h, p)) => state.guard.resolve(&h, p).await,
        Err(r) => Err(r),
    };
    match checked {
        Ok(addrs) => Ok((host, port, addrs)),
        Err(refusal) => {
            let (status, kind) = match refusal {
                Refusal::Dns { .. } => (StatusCode::BAD_GATEWAY, "dns"),
                _ => (StatusCode::FORBIDDEN, "blocked"),
            };
            let text = format!("refused by conclave-agent: {refusal}");
            state.record(ProxyEvent::Refused { host, port, refusal });
            Err(refusal_response(status, kind, &text))
        }
    }
}

/// Connects to the first checked address that answers.
async fn connect_any(
    state: &State,
    host: &str,
    port: u16,
    addrs: &[SocketAddr],
) -> Result<TcpStream, Response<ProxyBody>> {
    let mut last = String::from("no address");
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = format!("no connection within {CONNECT_TIMEOUT:?}"),
        }
    }
    let text = format!("{host}:{port} cannot be reached: {last}");
    state.record(ProxyEvent::Unreachable { host: host.to_owned(), port, detail: last });
    Err(refusal_response(StatusCode::BAD_GATEWAY, "unreachable", &text))
}

/// CONNECT host:port — a tunnel to the checked address (https, wss).
async fn connect(state: Arc<State>, req: Request<Incoming>) -> Response<ProxyBody> {
    let Some(url) = target(&req) else {
        return refusal_response(StatusCode::BAD_REQUEST, "bad-request", "CONNECT needs host:port");
    };
    let (host, port, addrs) = match checked_addrs(&state, &url).await {
        Ok(t) => t,
        Err(response) => return response,
    };
    let upstream = match connect_any(&state, &host, port, &addrs).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let stop = state.stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = async {
                match hyper::upgrade::on(req).await {
                    Ok(upgraded) => tunnel(&state, TokioIo::new(upgraded), upstream).await,
                    Err(e) => tracing::debug!(error = %e, "browser proxy: CONNECT upgrade failed"),
                }
            } => {}
        }
    });
    Response::new(empty())
}

/// Copies both ways, counting what comes from upstream against the page's budget.
async fn tunnel(state: &State, client: TokioIo<hyper::upgrade::Upgraded>, upstream: TcpStream) {
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut up_read, mut up_write) = upstream.into_split();
    let upload = async {
        let _ = tokio::io::copy(&mut client_read, &mut up_write).await;
        let _ = up_write.shutdown().await;
    };
    let download = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = match up_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if !state.count(n) || client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    // Past the budget every tunnel of the page closes.
    tokio::select! {
        _ = async { tokio::join!(upload, download) } => {}
        _ = state.exceeded.cancelled() => {}
    }
}

/// Absolute-form `GET http://host/path`: one upstream connection per request, to the checked
/// address, the request passed on in origin form.
async fn forward(state: Arc<State>, req: Request<Incoming>) -> Response<ProxyBody> {
    let Some(url) = target(&req).filter(|u| u.scheme() == "http") else {
        return refusal_response(StatusCode::BAD_REQUEST, "bad-request", "only absolute http:// requests are proxied");
    };
    let (host, port, addrs) = match checked_addrs(&state, &url).await {
        Ok(t) => t,
        Err(response) => return response,
    };
    let stream = match connect_any(&state, &host, port, &addrs).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok(pair) => pair,
        Err(e) => return refusal_response(StatusCode::BAD_GATEWAY, "unreachable", &format!("{host}:{port}: {e}")),
    };
    let stop = state.stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = conn => {}
        }
    });

    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    parts.uri = match path.parse() {
        Ok(uri) => uri,
        Err(_) => return refusal_response(StatusCode::BAD_REQUEST, "bad-request", "unparsable path"),
    };
    parts.version = http::Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    if !parts.headers.contains_key(header::HOST)
        && let Ok(v) = HeaderValue::from_str(&url[url::Position::BeforeHost..url::Position::AfterPort])
    {
        parts.headers.insert(header::HOST, v);
    }
    let response = match tokio::time::timeout(RESPONSE_TIMEOUT, sender.send_request(Request::from_parts(parts, body)))
        .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return refusal_response(StatusCode::BAD_GATEWAY, "unreachable", &format!("{host}:{port}: {e}")),
        Err(_) => {
            return refusal_response(StatusCode::GATEWAY_TIMEOUT, "timeout", &format!("{host}:{port} did not answer"));
        }
    };
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, Counted { inner: body, state }.boxed())
}

/// Headers for one hop only (RFC 9110 §7.6.1), and those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in [
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

/// A response body whose bytes count against the page's budget; past it, the body fails and the
/// connection is cut.
struct Counted {
    inner: Incoming,
    state: Arc<State>,
}

impl Body for Counted {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && !self.state.count(data.len())
                {
                    return Poll::Ready(Some(Err("the page went past its byte budget".into())));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

fn empty() -> ProxyBody {
    Full::new(Bytes::new()).map_err(|never| match never {}).boxed()
}

/// An answer the proxy makes itself, marked with [`GUARD_HEADER`] (`blocked`, `dns`, …).
fn refusal_response(status: StatusCode, kind: &'static str, text: &str) -> Response<ProxyBody> {
    let mut response = Response::new(Full::new(Bytes::from(text.to_owned())).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(GUARD_HEADER, HeaderValue::from_static(kind));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
