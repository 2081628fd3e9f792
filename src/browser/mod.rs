//! The browser client behind `!browse`: Chromium over CDP, every page in a fresh browser context
//! whose traffic goes through the agent's guard proxy (invariant 6), and the guarded plain HTTP
//! fetcher the knowledge-base crawler uses.
//!
//! - [`crate::guard`]: which URLs, names and addresses may be reached (every IP spelling, every
//!   wrapping), shared with config validation.
//! - [`proxy`]: the forward proxy each browse context uses; resolves, checks and connects itself.
//! - [`fetch`]: plain HTTP GETs with the same guard (pinned resolver, redirects re-checked).
//! - [`cdp`], [`chromium`]: the DevTools connection; launching or attaching to Chromium.
//! - [`visit`], [`extract`]: loading one page, its main text as Markdown, its screenshot.
//!
//! Depends only on config and the guard; nothing here knows about rooms or jobs.

pub mod cdp;
pub mod chromium;
mod error;
pub mod extract;
pub mod fetch;
pub mod proxy;
mod visit;

pub use crate::guard::{BlockReason, Guard, Refusal};
pub use error::BrowseError;
pub use fetch::{Fetched, Fetcher};
pub use visit::{MAX_SCREENSHOT_BYTES, VIEWPORT};

use cdp::Cdp;
use chromium::{Running, Source};
use chromiumoxide::cdp::browser_protocol::browser::{self as cdp_browser, BrowserContextId};
use chromiumoxide::cdp::browser_protocol::target;
use proxy::GuardProxy;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, Semaphore};
use url::Url;

/// A loaded page, ready for a reply.
#[derive(Debug, Clone)]
pub struct Page {
    pub title: String,
    /// Where the page ended up, after redirects.
    pub final_url: String,
    /// The main content as Markdown, at most [`extract::MAX_MAIN_TEXT_CHARS`] characters.
    /// Untrusted: it goes to a model only as quoted data (invariant 8).
    pub main_text: String,
    pub main_text_truncated: bool,
    pub screenshot: Screenshot,
    /// Requests of the page the guard refused (its images, frames, scripts' fetches).
    pub blocked_requests: usize,
}

/// A viewport screenshot.
#[derive(Clone)]
pub struct Screenshot {
    pub bytes: Vec<u8>,
    /// `image/png` or `image/jpeg`.
    pub mimetype: &'static str,
    pub width: u32,
    pub height: u32,
}

impl std::fmt::Debug for Screenshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Screenshot({} {}x{}, {} bytes)", self.mimetype, self.width, self.height, self.bytes.len())
    }
}

/// The browser: one per agent, shared by every browse.
#[derive(Clone)]
pub struct Browser {
    inner: Arc<Inner>,
}

struct Inner {
    source: Source,
    guard: Guard,
    max_page_bytes: u64,
    page_timeout: Duration,
    tabs: Semaphore,
    running: Mutex<Option<Running>>,
    /// Contexts this agent created and has not yet disposed of.
    open: Arc<AtomicUsize>,
}

impl Browser {
    /// The browser `[browser]` describes. Nothing starts until the first browse or probe.
    pub fn from_config(config: &crate::config::Browser) -> Result<Self, String> {
        let source = if config.cdp_url.trim().is_empty() {
            Source::Launch { path: config.chromium_path.clone().into() }
        } else {
            Source::Attach { url: config.cdp_url.trim().to_owned() }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                source,
                guard: Guard::new(&config.allow_hosts)?,
                max_page_bytes: config.max_page_bytes,
                page_timeout: Duration::from_secs(config.page_timeout_secs),
                tabs: Semaphore::new(config.max_tabs.max(1)),
                running: Mutex::new(None),
                open: Arc::new(AtomicUsize::new(0)),
            }),
        })
    }

    /// The guard this browser enforces (the fetcher for the same config uses an equal one).
    pub fn guard(&self) -> &Guard {
        &self.inner.guard
    }

    /// Loads `input` (a URL; without a scheme it gets `https://`) and reads the page. Waits for a
    /// free tab first (at most `max_tabs` at once); `cancel` ends the browse at any point. The
    /// page's browser context is disposed of whatever happens.
    pub async fn browse(&self, input: &str, cancel: impl Future<Output = ()>) -> Result<Page, BrowseError> {
        let url = normalize_url(input)?;
        tokio::pin!(cancel);
        // Refuse what can be refused before a tab is taken: other schemes, blocked literals and
        // names, names that do not resolve or resolve to blocked addresses.
        let (host, port) = self.inner.guard.check_url(&url)?;
        tokio::select! {
            biased;
            _ = &mut cancel => return Err(BrowseError::Cancelled),
            r = self.inner.guard.resolve(&host, port) => { r?; }
        }
        let _permit = tokio::select! {
            biased;
            _ = &mut cancel => return Err(BrowseError::Cancelled),
            p = self.inner.tabs.acquire() => p.map_err(|_| BrowseError::Unavailable("the browser is shutting down".into()))?,
        };
        let (cdp, devtools) = tokio::select! {
            biased;
            _ = &mut cancel => return Err(BrowseError::Cancelled),
            c = self.connection() => c?,
        };
        let mut guard = self.inner.guard.clone();
        guard.forbid(devtools);
        let proxy = GuardProxy::start(guard, self.inner.max_page_bytes)
            .await
            .map_err(|e| BrowseError::Unavailable(format!("cannot start the guard proxy: {e}")))?;

        let mut lease: Option<ContextLease> = None;
        let timeout = self.inner.page_timeout;
        let result = {
            let run = async {
                let l = ContextLease::create(&cdp, &proxy, &self.inner.open).await?;
                let id = l.id.clone();
                lease = Some(l);
                visit::visit(&cdp, &id, &proxy, &url, self.inner.max_page_bytes).await
            };
            tokio::select! {
                biased;
                _ = &mut cancel => Err(BrowseError::Cancelled),
                _ = proxy.exceeded() => Err(BrowseError::TooBig { limit: self.inner.max_page_bytes }),
                r = tokio::time::timeout(timeout, run) => r.unwrap_or_else(|_| Err(
                    // A page cut off at its byte budget may never finish loading: say why.
                    if proxy.report().over_budget {
                        BrowseError::TooBig { limit: self.inner.max_page_bytes }
                    } else {
                        BrowseError::Timeout(timeout.as_secs())
                    }
                )),
            }
        };
        if let Some(lease) = lease {
            lease.dispose().await;
        }
        drop(proxy);
        if let Err(e) = &result {
            tracing::info!(host = %url.host_str().unwrap_or_default(), error = %e, "browser: browse failed");
        }
        result
    }

    /// `check`'s probe: starts or reaches Chromium and returns its product and where it is.
    /// A blank page is opened in a fresh browser context and closed again, so a Chromium that
    /// answers but cannot make pages shows as down.
    pub async fn probe(&self) -> Result<String, BrowseError> {
        let (cdp, devtools) = self.connection().await?;
        let version = cdp.call(None, cdp_browser::GetVersionParams::default()).await?;
        let context = cdp
            .call(None, target::CreateBrowserContextParams { dispose_on_detach: Some(true), ..Default::default() })
            .await?
            .browser_context_id;
        let mut blank = target::CreateTargetParams::new("about:blank");
        blank.browser_context_id = Some(context.clone());
        let page = cdp.call(None, blank).await.map(drop);
        // Disposing of the context closes its page too; done whether or not the page opened.
        let disposed = cdp.call(None, target::DisposeBrowserContextParams::new(context)).await.map(drop);
        page.and(disposed)?;
        Ok(match &self.inner.source {
            Source::Launch { path } => {
                format!("{} (launched {}, DevTools {devtools})", version.product, path.display())
            }
            Source::Attach { url } => format!("{} (attached at {url})", version.product),
        })
    }

    /// Browser contexts Chromium has besides its default one (ours, and on a shared Chromium
    /// anyone else's).
    pub async fn browser_contexts(&self) -> Result<usize, BrowseError> {
        let (cdp, _) = self.connection().await?;
        Ok(cdp.call(None, target::GetBrowserContextsParams::default()).await?.browser_context_ids.len())
    }

    /// Contexts this agent created and has not disposed of yet.
    pub fn open_contexts(&self) -> usize {
        self.inner.open.load(Ordering::SeqCst)
    }

    /// The process id of the Chromium the agent launched, if it is running.
    pub async fn chromium_pid(&self) -> Option<u32> {
        self.inner.running.lock().await.as_ref().and_then(Running::pid)
    }

    /// The live connection, (re)starting Chromium or reconnecting when it went away.
    async fn connection(&self) -> Result<(Cdp, SocketAddr), BrowseError> {
        let mut running = self.inner.running.lock().await;
        if let Some(r) = running.as_mut() {
            if r.is_alive() {
                return Ok((r.cdp.clone(), r.devtools));
            }
            tracing::warn!("browser: the Chromium connection is gone; starting again");
            *running = None;
        }
        let r = chromium::start(&self.inner.source).await.map_err(BrowseError::Unavailable)?;
        let out = (r.cdp.clone(), r.devtools);
        *running = Some(r);
        Ok(out)
    }
}

/// One browser context, disposed of by [`ContextLease::dispose`] or, if the browse was dropped
/// half-way, by a task spawned on drop.
struct ContextLease {
    cdp: Cdp,
    id: BrowserContextId,
    open: Arc<AtomicUsize>,
    disposed: bool,
}

impl ContextLease {
    /// Creates the context in a task of its own: a browse cancelled while Chromium is still
    /// creating it must not leave it behind.
    async fn create(cdp: &Cdp, proxy: &GuardProxy, open: &Arc<AtomicUsize>) -> Result<Self, BrowseError> {
        let params = target::CreateBrowserContextParams {
            dispose_on_detach: Some(true),
            proxy_server: Some(proxy.url()),
            // Chromium would send loopback requests around the proxy without this.
            proxy_bypass_list: Some("<-loopback>".into()),
            ..Default::default()
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (task_cdp, task_open) = (cdp.clone(), open.clone());
        tokio::spawn(async move {
            let created = task_cdp.call(None, params).await.map(|r| r.browser_context_id);
            if let Ok(id) = &created {
                task_open.fetch_add(1, Ordering::SeqCst);
                let deny = cdp_browser::SetDownloadBehaviorParams {
                    behavior: cdp_browser::SetDownloadBehaviorBehavior::Deny,
                    browser_context_id: Some(id.clone()),
                    download_path: None,
                    events_enabled: None,
                };
                let _ = task_cdp.call(None, deny).await;
            }
            if let Err(Ok(id)) = tx.send(created) {
                dispose(&task_cdp, id, &task_open).await;
            }
        });
        let id = rx.await.map_err(|_| BrowseError::Unavailable("the browser context was not created".into()))??;
        Ok(Self { cdp: cdp.clone(), id, open: open.clone(), disposed: false })
    }

    async fn dispose(mut self) {
        self.disposed = true;
        dispose(&self.cdp, self.id.clone(), &self.open).await;
    }
}

impl Drop for ContextLease {
    fn drop(&mut self) {
        if !self.disposed
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let (cdp, id, open) = (self.cdp.clone(), self.id.clone(), self.open.clone());
            rt.spawn(async move { dispose(&cdp, id, &open).await });
        }
    }
}

async fn dispose(cdp: &Cdp, id: BrowserContextId, open: &AtomicUsize) {
    match cdp.call(None, target::DisposeBrowserContextParams::new(id)).await {
        Ok(_) => {}
        // A browser that is gone took its contexts with it.
        Err(cdp::CdpError::Closed) => {}
        Err(e) => tracing::warn!(error = %e, "browser: a browser context could not be disposed of"),
    }
    open.fetch_sub(1, Ordering::SeqCst);
}

/// Schemes a user may type that are not web addresses: parsed as they are, so the guard names them.
const OTHER_SCHEMES: &[&str] =
    &["file:", "data:", "javascript:", "about:", "chrome:", "view-source:", "blob:", "mailto:", "ftp:", "ws:", "wss:"];

/// The URL a user typed: one without a scheme gets `https://` (`example.org/x`, `localhost:8080`).
pub fn normalize_url(input: &str) -> Result<Url, BrowseError> {
    let input = input.trim().trim_start_matches('<').trim_end_matches('>');
    if input.is_empty() {
        return Err(BrowseError::InvalidUrl("empty".into()));
    }
    let lower = input.to_ascii_lowercase();
    let text = if input.contains("://") || OTHER_SCHEMES.iter().any(|s| lower.starts_with(s)) {
        input.to_owned()
    } else {
        format!("https://{input}")
    };
    Url::parse(&text).map_err(|e| BrowseError::InvalidUrl(format!("{input}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_without_a_scheme_get_https() {
        let cases = [
            ("example.org", "https://example.org/"),
            ("example.org/a?b=1", "https://example.org/a?b=1"),
            ("localhost:8080", "https://localhost:8080/"),
            ("http://example.org", "http://example.org/"),
            ("<https://example.org/x>", "https://example.org/x"),
            ("file:///etc/passwd", "file:///etc/passwd"),
            ("FILE:///etc/passwd", "file:///etc/passwd"),
            ("javascript:alert(1)", "javascript:alert(1)"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_url(input).unwrap().as_str(), want, "{input}");
        }
        assert!(normalize_url("  ").is_err());
        assert!(normalize_url("http://[::1").is_err());
    }
}
