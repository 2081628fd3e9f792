//! The Chromium the agent browses with: one it launches (headless, a fresh profile of its own,
//! launched again when it dies) or an existing one it attaches to (`browser.cdp_url`, N.eko's).
//! Attached, it never closes the browser (that would close the person's session too).

use super::cdp::{Cdp, CdpError};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

/// Longest wait for a launched Chromium to open its DevTools port.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for `/json/version` of an attached Chromium.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(5);

/// The flags a launched Chromium gets. Background networking, sync and component updates would
/// make requests of their own; `<-loopback>` stops Chromium sending loopback requests past the
/// proxy; WebRTC may not send UDP around it either.
const LAUNCH_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-breakpad",
    "--disable-crash-reporter",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-service-autorun",
    "--password-store=basic",
    "--use-mock-keychain",
    "--mute-audio",
    "--hide-scrollbars",
    "--proxy-bypass-list=<-loopback>",
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
];

/// Where the browser comes from.
#[derive(Debug, Clone)]
pub enum Source {
    Launch { path: PathBuf },
    Attach { url: String },
}

/// A live browser connection, with the process when the agent launched it.
pub struct Running {
    pub cdp: Cdp,
    /// The DevTools endpoint: pages must never reach it.
    pub devtools: SocketAddr,
    process: Option<Launched>,
}

struct Launched {
    child: tokio::process::Child,
    /// Removed when the browser is dropped: nothing of one browser's profile outlives it.
    _profile: tempfile::TempDir,
}

impl Running {
    /// Whether the connection (and the process, when launched) is still there.
    pub fn is_alive(&mut self) -> bool {
        let process_alive = match &mut self.process {
            Some(p) => matches!(p.child.try_wait(), Ok(None)),
            None => true,
        };
        process_alive && self.cdp.is_alive()
    }

    /// The launched browser's process id (for tests that take it away).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(|p| p.child.id())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(p) = &mut self.process {
            let _ = p.child.start_kill();
        }
    }
}

pub async fn start(source: &Source) -> Result<Running, String> {
    match source {
        Source::Launch { path } => launch(path).await,
        Source::Attach { url } => attach(url).await,
    }
}

async fn launch(path: &Path) -> Result<Running, String> {
    let profile = tempfile::Builder::new()
        .prefix("conclave-chromium-")
        .tempdir()
        .map_err(|e| format!("cannot create a profile directory: {e}"))?;
    let mut child = tokio::process::Command::new(path)
        .args(LAUNCH_FLAGS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", path.display()))?;
    // Keep the last lines Chromium prints: they say why it would not start.
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    if let Some(stderr) = child.stderr.take() {
        let tail = tail.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::trace!(%line, "chromium");
                let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                if t.len() == 5 {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
    }
    let last_words = || tail.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect::<Vec<_>>().join(" | ");

    // Chromium writes the port it chose, then the browser target's path, to DevToolsActivePort.
    let port_file = profile.path().join("DevToolsActivePort");
    let deadline = Instant::now() + LAUNCH_TIMEOUT;
    let (port, ws_path) = loop {
        if let Ok(text) = std::fs::read_to_string(&port_file)
            && let Some((port, path)) = parse_active_port(&text)
        {
            break (port, path);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{} exited at start ({status}): {}", path.display(), last_words()));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} opened no DevTools port within {LAUNCH_TIMEOUT:?}: {}",
                path.display(),
                last_words()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    watch_for_our_death(child.id(), profile.path());
    let devtools = SocketAddr::from(([127, 0, 0, 1], port));
    let cdp = Cdp::connect(&format!("ws://{devtools}{ws_path}")).await.map_err(|e| e.to_string())?;
    tracing::info!(pid = child.id(), %devtools, "browser: launched Chromium");
    Ok(Running { cdp, devtools, process: Some(Launched { child, _profile: profile }) })
}

/// A launched Chromium outlives an agent killed with SIGKILL (no destructor runs): a small shell
/// loop ends it (and removes its profile) within two seconds of the agent's death, and ends
/// itself with Chromium.
fn watch_for_our_death(chromium: Option<u32>, profile: &Path) {
    let Some(chromium) = chromium else { return };
    let agent = std::process::id();
    let script = format!(
        "while kill -0 {agent} 2>/dev/null && kill -0 {chromium} 2>/dev/null; do sleep 2; done; \
         kill -0 {agent} 2>/dev/null || {{ kill -9 {chromium} 2>/dev/null; sleep 1; rm -rf \"$0\"; }}"
    );
    let spawned = std::process::Command::new("sh")
        .args(["-c", &script])
        .arg(profile)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match spawned {
        // Reaped when it ends, so it leaves no zombie.
        Ok(mut watchdog) => drop(std::thread::spawn(move || watchdog.wait())),
        Err(e) => tracing::warn!(error = %e, "browser: no watchdog for Chromium; it may outlive a killed agent"),
    }
}

fn parse_active_port(text: &str) -> Option<(u16, String)> {
    let mut lines = text.lines();
    let port = lines.next()?.trim().parse().ok()?;
    let path = lines.next()?.trim();
    path.starts_with("/devtools/browser/").then(|| (port, path.to_owned()))
}

/// Attaches to `url`: `http://host:port` (its `/json/version` names the websocket) or the
/// `ws://…/devtools/browser/…` URL itself.
async fn attach(url: &str) -> Result<Running, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("browser.cdp_url {url:?}: {e}"))?;
    let devtools = parsed
        .socket_addrs(|| None)
        .ok()
        .and_then(|a| a.into_iter().next())
        .ok_or_else(|| format!("browser.cdp_url {url:?} has no reachable host"))?;
    let ws_url = if matches!(parsed.scheme(), "ws" | "wss") {
        url.to_owned()
    } else {
        let version_url = parsed.join("/json/version").map_err(|e| e.to_string())?;
        let http = reqwest::Client::builder().timeout(ATTACH_TIMEOUT).no_proxy().build().map_err(|e| e.to_string())?;
        let version: serde_json::Value = http
            .get(version_url.clone())
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("cannot reach Chromium at {version_url}: {}", crate::error_text::chain(&e)))?
            .json()
            .await
            .map_err(|e| format!("{version_url} did not answer like Chromium: {e}"))?;
        let ws = version["webSocketDebuggerUrl"]
            .as_str()
            .ok_or_else(|| format!("{version_url} names no webSocketDebuggerUrl"))?;
        // Chromium names itself by the address it listens on; reach it the way we reached the
        // HTTP endpoint (through a port forward, say).
        let mut ws = url::Url::parse(ws).map_err(|e| format!("webSocketDebuggerUrl {ws:?}: {e}"))?;
        let _ = ws.set_host(parsed.host_str());
        let _ = ws.set_port(parsed.port_or_known_default());
        ws.to_string()
    };
    let cdp = Cdp::connect(&ws_url).await.map_err(|e: CdpError| e.to_string())?;
    tracing::info!(%devtools, "browser: attached to Chromium");
    Ok(Running { cdp, devtools, process: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devtools_active_port_is_port_then_path() {
        assert_eq!(
            parse_active_port("40123\n/devtools/browser/ab-cd\n"),
            Some((40123, "/devtools/browser/ab-cd".to_owned()))
        );
        assert_eq!(parse_active_port("40123\n"), None, "half-written");
        assert_eq!(parse_active_port("x\n/devtools/browser/a"), None);
    }
}
