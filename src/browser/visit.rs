//! One page in one fresh browser context: open a tab, load the URL through the guard proxy,
//! wait for it to settle, then read its title, final URL, main text and a screenshot.

use super::cdp::{Cdp, CdpError, Event};
use super::error::BrowseError;
use super::extract;
use super::proxy::{GUARD_HEADER, GuardProxy, ProxyEvent, ProxyReport};
use super::{Page, Screenshot};
use base64::Engine;
use chromiumoxide::cdp::browser_protocol::browser::BrowserContextId;
use chromiumoxide::cdp::browser_protocol::{emulation, fetch, inspector, network, page, target};
use chromiumoxide::cdp::js_protocol::runtime;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use url::Url;

/// The viewport screenshots show (CSS pixels, device scale 1).
pub const VIEWPORT: (u32, u32) = (1280, 800);
/// Largest screenshot; a PNG past it is taken again as JPEG.
pub const MAX_SCREENSHOT_BYTES: usize = 1536 * 1024;
/// After `load`, the longest wait for the network to go quiet (scripts still fetching).
const SETTLE: Duration = Duration::from_secs(2);
/// Quiet means no request of the page in flight for this long.
const QUIET: Duration = Duration::from_millis(300);
/// HTML read out of the page for extraction, in characters.
const MAX_HTML_CHARS: usize = 2_000_000;
/// Schemes a page may not load even in a frame; the proxy sees only http(s) and WebSockets,
/// so these are refused in the tab itself (`data:` and `blob:` stay allowed inside a page).
const REFUSED_SCHEMES: &[&str] = &[
    "file:*",
    "chrome:*",
    "chrome-extension:*",
    "chrome-untrusted:*",
    "view-source:*",
    "ftp:*",
    "devtools:*",
    "filesystem:*",
];

/// The main document's response, as the tab saw it.
#[derive(Debug, Clone)]
struct Document {
    url: String,
    status: u16,
    mime: String,
    from_guard: bool,
}

struct Tab<'a> {
    cdp: &'a Cdp,
    session: String,
    events: mpsc::Receiver<Event>,
    frame: String,
    document: Option<Document>,
    /// Requests (and WebSockets) of the page still in flight, by request id.
    in_flight: std::collections::HashSet<String>,
}

impl Tab<'_> {
    async fn call<C: chromiumoxide::types::Command>(&self, command: C) -> Result<C::Response, CdpError> {
        self.cdp.call(Some(&self.session), command).await
    }

    /// Reads events until `done` says so (or `deadline` passes: `Ok(false)`), answering what must
    /// be answered on the way: dialogs, refused schemes, crashes.
    async fn pump(&mut self, deadline: Instant, mut done: impl FnMut(&Event) -> bool) -> Result<bool, BrowseError> {
        loop {
            let event = match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => return Ok(false),
                Ok(None) => {
                    return Err(BrowseError::Unavailable("the browser closed the connection (did it crash?)".into()));
                }
                Ok(Some(e)) => e,
            };
            self.observe(&event).await?;
            if done(&event) {
                return Ok(true);
            }
        }
    }

    async fn observe(&mut self, event: &Event) -> Result<(), BrowseError> {
        let p = &event.params;
        match event.method.as_str() {
            "Inspector.targetCrashed" => return Err(BrowseError::Crashed),
            "Inspector.detached" => return Err(BrowseError::Unavailable("the browser closed the tab".into())),
            "Page.javascriptDialogOpening" => {
                // An open alert() stops the page; nobody is there to click it.
                let _ = self.call(page::HandleJavaScriptDialogParams::new(false)).await;
            }
            "Fetch.requestPaused" => {
                let id = p["requestId"].as_str().unwrap_or_default().to_owned();
                let url = p["request"]["url"].as_str().unwrap_or_default();
                let scheme = url.split(':').next().unwrap_or_default();
                tracing::warn!(%scheme, "browser: request refused by the guard (scheme)");
                let fail = fetch::FailRequestParams::new(id, network::ErrorReason::BlockedByClient);
                let _ = self.call(fail).await;
            }
            "Network.requestWillBeSent" | "Network.webSocketCreated" => {
                if let Some(id) = p["requestId"].as_str() {
                    self.in_flight.insert(id.to_owned());
                }
            }
            "Network.loadingFinished"
            | "Network.loadingFailed"
            | "Network.webSocketClosed"
            | "Network.webSocketFrameError"
            | "Network.webSocketHandshakeResponseReceived" => {
                if let Some(id) = p["requestId"].as_str() {
                    self.in_flight.remove(id);
                }
            }
            "Network.responseReceived" if p["type"] == "Document" && p["frameId"] == self.frame.as_str() => {
                let r = &p["response"];
                let from_guard =
                    r["headers"].as_object().is_some_and(|h| h.keys().any(|k| k.eq_ignore_ascii_case(GUARD_HEADER)));
                self.document = Some(Document {
                    url: r["url"].as_str().unwrap_or_default().to_owned(),
                    status: r["status"].as_u64().unwrap_or(0) as u16,
                    mime: r["mimeType"].as_str().unwrap_or_default().to_ascii_lowercase(),
                    from_guard,
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// Waits (up to `until`) for no request to be in flight for [`QUIET`].
    async fn settle(&mut self, until: Instant) -> Result<(), BrowseError> {
        loop {
            let quiet_at = Instant::now() + QUIET;
            if quiet_at > until {
                return Ok(());
            }
            // Any event restarts the quiet period while requests are in flight; with none in
            // flight, only a new request does.
            let idle = self.in_flight.is_empty();
            let got = self
                .pump(quiet_at, |e| {
                    !idle || matches!(e.method.as_str(), "Network.requestWillBeSent" | "Network.webSocketCreated")
                })
                .await?;
            if !got && self.in_flight.is_empty() {
                return Ok(());
            }
        }
    }
}

fn lifecycle(event: &Event, frame: &str, loader: Option<&str>, names: &[&str]) -> bool {
    let p = &event.params;
    event.method == "Page.lifecycleEvent"
        && p["frameId"] == frame
        && loader.is_none_or(|l| p["loaderId"] == l)
        && p["name"].as_str().is_some_and(|n| names.contains(&n))
}

/// Loads `url` in a new tab of `context` and reads the page.
pub async fn visit(
    cdp: &Cdp,
    context: &BrowserContextId,
    proxy: &GuardProxy,
    url: &Url,
    max_bytes: u64,
) -> Result<Page, BrowseError> {
    let mut create = target::CreateTargetParams::new("about:blank");
    create.browser_context_id = Some(context.clone());
    let target_id = cdp.call(None, create).await?.target_id;
    let attach = target::AttachToTargetParams { target_id: target_id.clone(), flatten: Some(true) };
    let session = cdp.call(None, attach).await?.session_id;
    let session: String = session.as_ref().to_owned();
    let events = cdp.subscribe(&session).await?;
    let mut tab = Tab {
        cdp,
        session,
        events,
        frame: target_id.as_ref().to_owned(),
        document: None,
        in_flight: Default::default(),
    };
    let result = load_and_read(&mut tab, proxy, url, max_bytes).await;
    cdp.unsubscribe(&tab.session);
    result
}

async fn load_and_read(tab: &mut Tab<'_>, proxy: &GuardProxy, url: &Url, max_bytes: u64) -> Result<Page, BrowseError> {
    tab.call(page::EnableParams::default()).await?;
    tab.call(page::SetLifecycleEventsEnabledParams::new(true)).await?;
    tab.call(network::EnableParams::default()).await?;
    tab.call(inspector::EnableParams::default()).await?;
    let patterns = REFUSED_SCHEMES
        .iter()
        .map(|p| fetch::RequestPattern { url_pattern: Some((*p).into()), ..Default::default() })
        .collect();
    tab.call(fetch::EnableParams { patterns: Some(patterns), handle_auth_requests: None }).await?;
    let (w, h) = VIEWPORT;
    tab.call(emulation::SetDeviceMetricsOverrideParams::new(i64::from(w), i64::from(h), 1.0, false)).await?;

    let nav = tab.call(page::NavigateParams::new(url.as_str())).await?;
    let loader = nav.loader_id.as_ref().map(|l| l.as_ref().to_owned());
    if let Some(error) = nav.error_text.as_deref().filter(|e| !e.is_empty()) {
        // The document may still have answered (a download, a refusal): judge that first.
        tab.pump(Instant::now() + Duration::from_millis(200), |_| false).await?;
        return Err(judge(tab.document.as_ref(), &proxy.report(), url, Some(error), max_bytes).unwrap_or_else(|| {
            BrowseError::Unreachable { host: url.host_str().unwrap_or_default().to_owned(), detail: error.to_owned() }
        }));
    }
    let frame = tab.frame.clone();
    // The page timeout (around the whole visit) bounds the wait for `load`.
    let far = Instant::now() + Duration::from_secs(24 * 3600);
    tab.pump(far, |e| lifecycle(e, &frame, loader.as_deref(), &["load"])).await?;
    tab.settle(Instant::now() + SETTLE).await?;
    if let Some(err) = judge(tab.document.as_ref(), &proxy.report(), url, None, max_bytes) {
        return Err(err);
    }

    let read = read_page(tab).await?;
    let screenshot = screenshot(tab).await?;
    let report = proxy.report();
    if report.over_budget {
        return Err(BrowseError::TooBig { limit: max_bytes });
    }
    let final_url = tab.document.as_ref().map(|d| d.url.clone()).filter(|u| !u.is_empty()).unwrap_or(read.url.clone());
    let final_url = if read.url.starts_with("http") { read.url.clone() } else { final_url };
    let (main_text, truncated) = {
        let (html, text, u) = (read.html, read.text, final_url.clone());
        tokio::task::spawn_blocking(move || extract::main_text(&html, &u, &text))
            .await
            .map_err(|e| BrowseError::Unavailable(format!("text extraction failed: {e}")))?
    };
    let blocked = report.events.iter().filter(|e| matches!(e, ProxyEvent::Refused { .. })).count();
    Ok(Page {
        title: read.title,
        final_url,
        main_text,
        main_text_truncated: truncated,
        screenshot,
        blocked_requests: blocked,
    })
}

/// What the page's document and the proxy say went wrong, if anything.
fn judge(
    document: Option<&Document>,
    report: &ProxyReport,
    url: &Url,
    nav_error: Option<&str>,
    max_bytes: u64,
) -> Option<BrowseError> {
    if report.over_budget {
        return Some(BrowseError::TooBig { limit: max_bytes });
    }
    let from_event = |e: &ProxyEvent| match e.clone() {
        ProxyEvent::Refused { refusal, .. } => BrowseError::from(refusal),
        ProxyEvent::Unreachable { host, detail, .. } => BrowseError::Unreachable { host, detail },
    };
    if let Some(doc) = document {
        if doc.from_guard {
            // The proxy refused the page or a redirect of it: say which host and why.
            let event = Url::parse(&doc.url)
                .ok()
                .and_then(|u| report.event_for(u.host_str()?, u.port_or_known_default()?).cloned())
                .or_else(|| report.events.last().cloned());
            return Some(event.map_or_else(
                || BrowseError::Unreachable {
                    host: url.host_str().unwrap_or_default().into(),
                    detail: "refused".into(),
                },
                |e| from_event(&e),
            ));
        }
        if doc.status >= 400 {
            return Some(BrowseError::Http { status: doc.status, url: doc.url.clone() });
        }
        if !doc.mime.is_empty() && !matches!(doc.mime.as_str(), "text/html" | "application/xhtml+xml") {
            return Some(BrowseError::NotHtml { url: doc.url.clone(), content_type: doc.mime.clone() });
        }
    }
    let error = nav_error?;
    // A failed navigation: the proxy's last word is about the hop that failed (a redirect's
    // target, say); without one it is the browser's own error.
    if let Some(event) = report.events.last() {
        return Some(from_event(event));
    }
    let host = url.host_str().unwrap_or_default().to_owned();
    Some(if error.contains("ERR_NAME_NOT_RESOLVED") {
        BrowseError::Dns { host, detail: error.to_owned() }
    } else {
        BrowseError::Unreachable { host, detail: error.to_owned() }
    })
}

struct Read {
    title: String,
    url: String,
    html: String,
    text: String,
}

/// Title, location, HTML and visible text, read in an isolated world so the page's own scripts
/// cannot change what the reading code does.
async fn read_page(tab: &Tab<'_>) -> Result<Read, BrowseError> {
    let mut world = page::CreateIsolatedWorldParams::new(tab.frame.clone());
    world.world_name = Some("conclave-read".into());
    let context = tab.call(world).await?.execution_context_id;
    let expression = format!(
        "(() => {{ const max = {MAX_HTML_CHARS}; const d = document.documentElement;
           const html = d ? d.outerHTML : ''; const text = document.body ? document.body.innerText : '';
           return {{ title: document.title || '', url: location.href,
                     html: html.length > max ? html.slice(0, max) : html,
                     text: text.length > max ? text.slice(0, max) : text }}; }})()"
    );
    let mut eval = runtime::EvaluateParams::new(expression);
    eval.context_id = Some(context);
    eval.return_by_value = Some(true);
    let result = tab.call(eval).await?;
    let value = result.result.value.unwrap_or_default();
    let s = |k: &str| value[k].as_str().unwrap_or_default().to_owned();
    let title: String = s("title").chars().take(300).collect();
    Ok(Read { title: title.trim().to_owned(), url: s("url"), html: s("html"), text: s("text") })
}

/// The viewport as PNG, or as JPEG when the PNG would be too large.
async fn screenshot(tab: &Tab<'_>) -> Result<Screenshot, BrowseError> {
    use page::CaptureScreenshotFormat as Format;
    for (format, quality, mimetype) in [
        (Format::Png, None, "image/png"),
        (Format::Jpeg, Some(75), "image/jpeg"),
        (Format::Jpeg, Some(40), "image/jpeg"),
    ] {
        let params = page::CaptureScreenshotParams {
            format: Some(format),
            quality,
            capture_beyond_viewport: Some(false),
            ..Default::default()
        };
        let data = tab.call(params).await?.data;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(AsRef::<str>::as_ref(&data))
            .map_err(|e| BrowseError::Unavailable(format!("the screenshot was not base64: {e}")))?;
        if bytes.len() > MAX_SCREENSHOT_BYTES {
            continue;
        }
        let size = imagesize::blob_size(&bytes)
            .map_err(|e| BrowseError::Unavailable(format!("the screenshot is not an image: {e}")))?;
        return Ok(Screenshot { bytes, mimetype, width: size.width as u32, height: size.height as u32 });
    }
    Err(BrowseError::Unavailable("the screenshot stays too large even as a JPEG".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::{BlockReason, Refusal};

    fn doc(status: u16, mime: &str, from_guard: bool) -> Document {
        Document { url: "http://127.0.0.1:9/".into(), status, mime: mime.into(), from_guard }
    }

    #[test]
    fn the_page_outcome_names_what_happened() {
        let url = Url::parse("http://example.org/").unwrap();
        let none = ProxyReport::default();
        assert_eq!(judge(Some(&doc(200, "text/html", false)), &none, &url, None, 10), None);
        assert!(matches!(
            judge(Some(&doc(404, "text/html", false)), &none, &url, None, 10),
            Some(BrowseError::Http { status: 404, .. })
        ));
        assert!(matches!(
            judge(Some(&doc(200, "application/pdf", false)), &none, &url, None, 10),
            Some(BrowseError::NotHtml { .. })
        ));
        let refused = ProxyReport {
            events: vec![ProxyEvent::Refused {
                host: "127.0.0.1".into(),
                port: 9,
                refusal: Refusal::Blocked { host: "127.0.0.1".into(), addr: None, reason: BlockReason::Loopback },
            }],
            ..Default::default()
        };
        let e = judge(Some(&doc(403, "text/plain", true)), &refused, &url, None, 10).unwrap();
        assert!(matches!(e, BrowseError::Blocked(Refusal::Blocked { reason: BlockReason::Loopback, .. })), "{e:?}");
        let e = judge(None, &refused, &url, Some("net::ERR_TUNNEL_CONNECTION_FAILED"), 10).unwrap();
        assert!(matches!(e, BrowseError::Blocked(_)), "{e:?}");
        let e = judge(None, &none, &url, Some("net::ERR_NAME_NOT_RESOLVED"), 10).unwrap();
        assert!(matches!(e, BrowseError::Dns { .. }), "{e:?}");
        let over = ProxyReport { over_budget: true, ..Default::default() };
        assert_eq!(
            judge(Some(&doc(200, "text/html", false)), &over, &url, None, 10),
            Some(BrowseError::TooBig { limit: 10 })
        );
    }
}
