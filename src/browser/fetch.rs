//! Plain HTTP GETs behind the same guard as the browser (invariant 6), for the knowledge-base
//! crawler: a resolver that checks every address of a name and hands reqwest exactly those
//! (pinned: what was checked is what is connected to), IP literals checked before the request,
//! redirects followed by hand and checked again at every hop, bounded in size and time.

use super::error::BrowseError;
use crate::guard::{Guard, Refusal};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use url::{Host, Url};

/// Redirects followed at most per fetch.
pub const MAX_REDIRECTS: usize = 10;

/// One fetched document.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Where the document was, after redirects.
    pub final_url: Url,
    pub status: u16,
    /// The `Content-Type` header, empty when there was none.
    pub content_type: String,
    pub body: Vec<u8>,
}

/// reqwest's resolver for names without a port-specific exception.
struct GuardResolver(Arc<Guard>);

impl reqwest::dns::Resolve for GuardResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        Box::pin(async move {
            // Port 0: only exceptions that name no port apply here; port-specific ones take the
            // pinned one-off client of `Fetcher::client_for`.
            let host = Host::Domain(name.as_str().to_owned());
            let addrs =
                guard.resolve(&host, 0).await.map_err(|r| Box::new(r) as Box<dyn std::error::Error + Send + Sync>)?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    guard: Arc<Guard>,
    max_bytes: u64,
    timeout: Duration,
}

impl Fetcher {
    /// A fetcher with `[browser]`'s exceptions, byte limit and timeout.
    pub fn from_config(config: &crate::config::Browser) -> Result<Self, String> {
        Self::new(
            Guard::new(&config.allow_hosts)?,
            config.max_page_bytes,
            Duration::from_secs(config.page_timeout_secs),
        )
    }

    pub fn new(guard: Guard, max_bytes: u64, timeout: Duration) -> Result<Self, String> {
        let guard = Arc::new(guard);
        let client =
            builder(timeout).dns_resolver(Arc::new(GuardResolver(guard.clone()))).build().map_err(|e| e.to_string())?;
        Ok(Self { client, guard, max_bytes, timeout })
    }

    /// GETs `url`, following redirects (each hop checked), within the time and size limits.
    pub async fn get(&self, url: &Url) -> Result<Fetched, BrowseError> {
        let secs = self.timeout.as_secs();
        tokio::time::timeout(self.timeout, self.get_inner(url.clone())).await.unwrap_or(Err(BrowseError::Timeout(secs)))
    }

    async fn get_inner(&self, mut url: Url) -> Result<Fetched, BrowseError> {
        for _ in 0..=MAX_REDIRECTS {
            let (host, port) = self.guard.check_url(&url)?;
            if url.scheme() == "https" {
                // reqwest is built without TLS in this crate so far (no client needed it); the
                // crawler's issue adds it. Chromium's browsing does its own TLS.
                return Err(BrowseError::Unavailable("fetching https:// needs TLS support, not built in yet".into()));
            }
            let client = self.client_for(&host, port).await?;
            let response =
                client.get(url.clone()).send().await.map_err(|e| transport_error(&e, &host, self.timeout))?;
            let status = response.status();
            if status.is_redirection()
                && let Some(location) = response.headers().get(reqwest::header::LOCATION)
            {
                let location = location
                    .to_str()
                    .map_err(|_| BrowseError::InvalidUrl("a redirect to an unreadable Location".into()))?;
                url =
                    url.join(location).map_err(|e| BrowseError::InvalidUrl(format!("redirect to {location}: {e}")))?;
                continue;
            }
            if status.as_u16() >= 400 {
                return Err(BrowseError::Http { status: status.as_u16(), url: url.to_string() });
            }
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            if response.content_length().is_some_and(|n| n > self.max_bytes) {
                return Err(BrowseError::TooBig { limit: self.max_bytes });
            }
            let body = self.read_body(response, &host).await?;
            return Ok(Fetched { final_url: url, status: status.as_u16(), content_type, body });
        }
        Err(BrowseError::Unreachable {
            host: url.host_str().unwrap_or_default().to_owned(),
            detail: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    /// The pooled client, or for a name excepted on this port only, a one-off client pinned to
    /// the addresses the guard resolved (the pooled resolver cannot see ports).
    async fn client_for(&self, host: &Host<String>, port: u16) -> Result<reqwest::Client, BrowseError> {
        let Host::Domain(name) = host else { return Ok(self.client.clone()) };
        if !self.guard.is_exempt(host, port) || self.guard.is_exempt(host, 0) {
            return Ok(self.client.clone());
        }
        let addrs: Vec<SocketAddr> = self.guard.resolve(host, port).await?;
        builder(self.timeout)
            .resolve_to_addrs(name, &addrs)
            .dns_resolver(Arc::new(GuardResolver(self.guard.clone())))
            .build()
            .map_err(|e| BrowseError::Unavailable(e.to_string()))
    }

    async fn read_body(&self, mut response: reqwest::Response, host: &Host<String>) -> Result<Vec<u8>, BrowseError> {
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| transport_error(&e, host, self.timeout))? {
            if (body.len() + chunk.len()) as u64 > self.max_bytes {
                return Err(BrowseError::TooBig { limit: self.max_bytes });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

fn builder(timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10).min(timeout))
        // Redirects are followed by hand, each hop checked; an environment proxy would resolve
        // names where the guard cannot see.
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("conclave-agent/", env!("CARGO_PKG_VERSION")))
}

/// A transport error as the guard's refusal when it was one, else as what happened.
fn transport_error(e: &reqwest::Error, host: &Host<String>, timeout: Duration) -> BrowseError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(refusal) = s.downcast_ref::<Refusal>() {
            return refusal.clone().into();
        }
        source = s.source();
    }
    if e.is_timeout() {
        return BrowseError::Timeout(timeout.as_secs());
    }
    BrowseError::Unreachable { host: host.to_string(), detail: crate::error_text::chain(e) }
}
