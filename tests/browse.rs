//! The browser against real Chromium (Debian's, from scripts/setup.sh): pages on an allowlisted
//! loopback site, a secret server on 127.0.0.1 that no hostile page may reach (invariant 6),
//! screenshots that are images of the page, contexts that are always disposed of, and a Chromium
//! that dies mid-browse.

mod common;

use common::test_site::{ARTICLE_MARKER, PAGE_TITLE, Web};
use conclave_agent::browser::{BlockReason, BrowseError, Browser, Fetcher, Refusal};
use conclave_agent::config;
use std::time::{Duration, Instant};

fn browser_config(web: &Web, timeout_secs: u64, max_bytes: u64) -> config::Browser {
    config::Browser {
        cdp_url: String::new(),
        chromium_path: "/usr/bin/chromium".into(),
        allow_hosts: vec![web.allow_entry()],
        max_tabs: 2,
        page_timeout_secs: timeout_secs,
        max_page_bytes: max_bytes,
    }
}

fn browser(web: &Web) -> Browser {
    Browser::from_config(&browser_config(web, 10, 2 * 1024 * 1024)).unwrap()
}

fn never() -> std::future::Pending<()> {
    std::future::pending()
}

/// The secret server saw nothing: checked after every test, across all of them.
fn assert_secret_untouched(web: &Web) {
    let seen = web.secret_requests();
    assert!(seen.is_empty(), "the secret server was reached: {seen:?}");
}

#[tokio::test]
async fn a_page_is_read_with_title_text_final_url_and_a_real_screenshot() {
    let web = Web::get();
    let b = browser(web);
    let page = b.browse(&web.url("/redirect-to-home"), never()).await.unwrap();
    assert_eq!(page.title, PAGE_TITLE);
    assert_eq!(page.final_url, web.url("/"), "after the redirect");
    assert!(page.main_text.contains(ARTICLE_MARKER), "{}", page.main_text);
    assert!(page.main_text.contains("Rottnest Island"), "{}", page.main_text);
    assert!(!page.main_text.contains("Copyright Quokka Society"), "footer dropped: {}", page.main_text);

    let shot = &page.screenshot;
    assert_eq!(shot.mimetype, "image/png");
    assert_eq!((shot.width, shot.height), (1280, 800));
    // Decode it: the page's red band is in the picture, and it is not one flat colour.
    let decoder = png::Decoder::new(std::io::Cursor::new(&shot.bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((info.width, info.height), (1280, 800));
    let channels = info.color_type.samples();
    let px = |x: usize, y: usize| &pixels[(y * info.width as usize + x) * channels..][..3];
    let distinct: std::collections::HashSet<&[u8]> = (0..800).step_by(20).map(|y| px(640, y)).collect();
    assert!(distinct.len() >= 3, "a blank screenshot: {distinct:?}");
    let red = (0..800).any(|y| {
        let p = px(640, y);
        p[0] > 150 && p[1] < 90 && p[2] < 90
    });
    assert!(red, "the page's red band is not in the screenshot");
    assert_eq!(b.browser_contexts().await.unwrap(), 0);
    assert_secret_untouched(web);
}

#[tokio::test]
async fn hostile_subrequests_never_reach_the_secret_server() {
    let web = Web::get();
    let b = browser(web);
    for case in ["img", "iframe", "fetch", "websocket", "worker", "service-worker", "spellings"] {
        let page = b.browse(&web.url(&format!("/hostile/{case}")), never()).await;
        let page = page.unwrap_or_else(|e| panic!("{case}: {e}"));
        assert!(page.main_text.contains(ARTICLE_MARKER), "{case}: the page itself loaded");
        // Not vacuous: the page did try, and the guard refused it.
        assert!(page.blocked_requests >= 1, "{case}: nothing was refused, so nothing was tried");
        if case == "spellings" {
            assert!(page.blocked_requests >= 6, "every spelling refused: {}", page.blocked_requests);
        }
        assert_secret_untouched(web);
    }
}

fn assert_blocked_loopback<T: std::fmt::Debug>(result: Result<T, BrowseError>, what: &str) {
    match result {
        Err(BrowseError::Blocked(Refusal::Blocked { reason: BlockReason::Loopback, .. })) => {}
        other => panic!("{what}: expected a loopback block, got {other:?}"),
    }
}

#[tokio::test]
async fn redirects_and_refreshes_to_the_secret_server_are_refused() {
    let web = Web::get();
    let b = browser(web);
    assert_blocked_loopback(b.browse(&web.url("/hostile/redirect"), never()).await, "302");
    assert_blocked_loopback(b.browse(&web.url("/hop/3"), never()).await, "redirect chain");
    let hops = web.site_requests().iter().filter(|p| p.starts_with("/hop/")).count();
    assert!(hops >= 3, "the chain was followed up to its last hop: {hops}");
    // A meta refresh: either the refresh is refused as the page, or it had not fired yet.
    match b.browse(&web.url("/hostile/meta-refresh"), never()).await {
        Ok(page) => assert!(page.final_url.starts_with(&web.site), "{}", page.final_url),
        Err(e) => assert!(matches!(e, BrowseError::Blocked(_)), "{e:?}"),
    }
    assert_secret_untouched(web);
}

#[tokio::test]
async fn every_spelling_of_the_secret_address_is_refused_before_chromium() {
    let web = Web::get();
    let b = browser(web);
    let p = web.secret_port();
    for url in [
        format!("http://127.1:{p}/"),
        format!("http://2130706433:{p}/"),
        format!("http://0x7f.0.0.1:{p}/"),
        format!("http://[::ffff:127.0.0.1]:{p}/"),
        format!("http://[::ffff:7f00:1]:{p}/"),
        format!("http://0177.0.0.1:{p}/"),
        format!("http://localhost:{p}/"),
        format!("localhost:{p}"),
    ] {
        assert_blocked_loopback(b.browse(&url, never()).await, &url);
    }
    for url in ["file:///etc/passwd", "chrome://settings", "view-source:http://example.org/", "ftp://example.org/"] {
        match b.browse(url, never()).await {
            Err(BrowseError::Blocked(Refusal::Scheme { .. })) => {}
            other => panic!("{url}: {other:?}"),
        }
    }
    let metadata = b.browse("http://169.254.169.254/latest/meta-data/", never()).await;
    assert!(
        matches!(metadata, Err(BrowseError::Blocked(Refusal::Blocked { reason: BlockReason::CloudMetadata, .. }))),
        "{metadata:?}"
    );
    let google = b.browse("http://metadata.google.internal/", never()).await;
    assert!(
        matches!(google, Err(BrowseError::Blocked(Refusal::Blocked { reason: BlockReason::CloudMetadata, .. }))),
        "{google:?}"
    );
    // The allowlist entry names the site's port: another port on the same address is refused.
    let other_port = format!("http://127.0.0.2:{p}/");
    assert_blocked_loopback(b.browse(&other_port, never()).await, &other_port);
    assert_secret_untouched(web);
}

#[tokio::test]
async fn a_page_cannot_open_local_files() {
    let web = Web::get();
    let b = browser(web);
    let page = b.browse(&web.url("/hostile/file"), never()).await.unwrap();
    assert!(page.final_url.starts_with(&web.site), "{}", page.final_url);
    assert!(!page.main_text.contains("root:x:0:0"), "{}", page.main_text);
    assert_secret_untouched(web);
}

#[tokio::test]
async fn errors_say_what_happened() {
    let web = Web::get();
    let b = Browser::from_config(&browser_config(web, 3, 1024 * 1024)).unwrap();
    let r = b.browse(&web.url("/missing"), never()).await;
    assert!(matches!(r, Err(BrowseError::Http { status: 404, .. })), "{r:?}");
    let r = b.browse(&web.url("/broken"), never()).await;
    assert!(matches!(r, Err(BrowseError::Http { status: 500, .. })), "{r:?}");
    let r = b.browse(&web.url("/doc.pdf"), never()).await;
    assert!(matches!(&r, Err(BrowseError::NotHtml { content_type, .. }) if content_type == "application/pdf"), "{r:?}");
    let r = b.browse(&web.url("/file.bin"), never()).await;
    assert!(matches!(r, Err(BrowseError::NotHtml { .. })), "{r:?}");
    let started = Instant::now();
    let r = b.browse(&web.url("/slow"), never()).await;
    assert!(matches!(r, Err(BrowseError::Timeout(3))), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
    let started = Instant::now();
    let r = b.browse(&web.url("/huge"), never()).await;
    assert!(matches!(r, Err(BrowseError::TooBig { limit: 1048576 })), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stopped at the budget, not the timeout: {:?}",
        started.elapsed()
    );
    // A closed port on the allowlisted address.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let b2 = Browser::from_config(&config::Browser {
        allow_hosts: vec!["127.0.0.2".into()],
        ..browser_config(web, 5, 1024 * 1024)
    })
    .unwrap();
    let r = b2.browse(&format!("http://127.0.0.2:{closed}/"), never()).await;
    assert!(matches!(r, Err(BrowseError::Unreachable { .. })), "{r:?}");
    // An alert() does not hang the page.
    let page = b.browse(&web.url("/hostile/dialog"), never()).await.unwrap();
    assert!(
        page.main_text.contains("after the alert") || page.main_text.contains(ARTICLE_MARKER),
        "{}",
        page.main_text
    );
    assert_eq!(b.browser_contexts().await.unwrap(), 0, "every context disposed of");
    assert_secret_untouched(web);
}

#[tokio::test]
async fn contexts_return_to_the_baseline_after_many_browses_a_timeout_and_a_cancel() {
    let web = Web::get();
    let b = Browser::from_config(&browser_config(web, 3, 2 * 1024 * 1024)).unwrap();
    b.probe().await.unwrap();
    let baseline = b.browser_contexts().await.unwrap();
    for i in 0..20 {
        let page = b.browse(&web.url(&format!("/page/{i}")), never()).await.unwrap();
        assert_eq!(page.title, format!("Page {i}"));
    }
    assert!(matches!(b.browse(&web.url("/slow"), never()).await, Err(BrowseError::Timeout(_))));
    let cancel = tokio::time::sleep(Duration::from_millis(800));
    let r = b.browse(&web.url("/slow?ms=20000"), cancel).await;
    assert_eq!(r.unwrap_err(), BrowseError::Cancelled);
    // Disposal after a cancel is awaited by the browse itself; allow the browser a moment.
    common::wait_for("contexts back to the baseline", Duration::from_secs(5), || async {
        (b.browser_contexts().await.unwrap() == baseline && b.open_contexts() == 0).then_some(())
    })
    .await;
    assert_secret_untouched(web);
}

#[tokio::test]
async fn at_most_max_tabs_pages_load_at_once() {
    let web = Web::get();
    let b = browser(web);
    b.probe().await.unwrap();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let watcher = {
        let (b, peak) = (b.clone(), peak.clone());
        tokio::spawn(async move {
            loop {
                peak.fetch_max(b.open_contexts(), std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let url = web.url("/slow?ms=600");
    let started = Instant::now();
    let results = futures_util::future::join_all((0..4).map(|_| b.browse(&url, never()))).await;
    watcher.abort();
    for r in results {
        assert_eq!(r.unwrap().title, "slow");
    }
    assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert!(started.elapsed() >= Duration::from_millis(1200), "two rounds of two: {:?}", started.elapsed());
}

#[tokio::test]
async fn chromium_killed_mid_browse_is_a_clear_error_and_the_next_browse_works() {
    let web = Web::get();
    let b = browser(web);
    b.probe().await.unwrap();
    let pid = b.chromium_pid().await.expect("a launched Chromium");
    let killer = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
    };
    let slow = web.url("/slow?ms=5000");
    let (r, ()) = tokio::join!(b.browse(&slow, never()), killer);
    assert!(matches!(r, Err(BrowseError::Unavailable(_))), "{r:?}");
    let page = b.browse(&web.url("/"), never()).await.unwrap();
    assert_eq!(page.title, PAGE_TITLE);
    assert_ne!(b.chromium_pid().await, Some(pid), "a new Chromium");
    assert_secret_untouched(web);
}

#[tokio::test]
async fn the_guarded_fetcher_follows_the_same_rules() {
    let web = Web::get();
    let f = Fetcher::from_config(&browser_config(web, 3, 1024 * 1024)).unwrap();
    let get = |u: String| {
        let f = f.clone();
        async move { f.get(&url::Url::parse(&u).unwrap()).await }
    };
    let doc = get(web.url("/redirect-to-home")).await.unwrap();
    assert_eq!(doc.final_url.as_str(), web.url("/"));
    assert!(doc.content_type.starts_with("text/html"));
    assert!(String::from_utf8_lossy(&doc.body).contains(ARTICLE_MARKER));
    assert_blocked_loopback(get(web.url("/hostile/redirect")).await, "fetcher 302");
    assert_blocked_loopback(get(web.url("/hop/3")).await, "fetcher chain");
    let p = web.secret_port();
    for u in [
        format!("http://127.1:{p}/"),
        format!("http://2130706433:{p}/"),
        format!("http://[::ffff:127.0.0.1]:{p}/"),
        format!("http://localhost:{p}/"),
    ] {
        assert_blocked_loopback(get(u.clone()).await, &u);
    }
    let r = get("file:///etc/passwd".into()).await;
    assert!(matches!(r, Err(BrowseError::Blocked(Refusal::Scheme { .. }))), "{r:?}");
    assert!(matches!(get(web.url("/huge")).await, Err(BrowseError::TooBig { .. })));
    assert!(matches!(get(web.url("/slow")).await, Err(BrowseError::Timeout(3))));
    assert!(matches!(get(web.url("/missing")).await, Err(BrowseError::Http { status: 404, .. })));
    // A name excepted on one port only: resolved, pinned and reached there, refused elsewhere.
    let site_port = web.site_addr.port();
    let f2 = Fetcher::from_config(&config::Browser {
        allow_hosts: vec![format!("localhost:{site_port}")],
        ..browser_config(web, 3, 1024 * 1024)
    })
    .unwrap();
    let r = f2.get(&url::Url::parse(&format!("http://localhost:{p}/")).unwrap()).await;
    assert_blocked_loopback(r, "localhost on the secret's port");
    assert_secret_untouched(web);
}

/// N.eko's case: a Chromium someone else runs, with a person's tab open in it. The agent browses
/// in contexts of its own behind the same guard, never attaches to the person's tab, and leaves
/// the browser running when it goes.
#[tokio::test]
async fn an_attached_shared_chromium_keeps_the_persons_tab_and_the_guard_holds() {
    let web = Web::get();
    let port = common::free_port();
    let profile = common::scratch_dir("shared-chromium");
    let persons_tab = web.url("/page/77");
    let log = profile.join("chromium.log");
    common::spawn_watched(
        "/usr/bin/chromium",
        &[
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            &format!("--remote-debugging-port={port}"),
            &format!("--user-data-dir={}", profile.join("profile").display()),
            &persons_tab,
        ],
        &log,
        None,
        None,
    );
    let cdp_url = format!("http://127.0.0.1:{port}");
    // Chromium's DevTools HTTP server speaks HTTP/1.1 only.
    let version_ok = || async {
        reqwest::get(format!("http://127.0.0.1:{port}/json/version")).await.is_ok_and(|r| r.status().is_success())
    };
    common::wait_for("the shared Chromium", Duration::from_secs(20), || async { version_ok().await.then_some(()) })
        .await;
    let list = || async {
        let v: serde_json::Value = reqwest::get(format!("{cdp_url}/json/list")).await.unwrap().json().await.unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .filter(|t| t["type"] == "page")
            .map(|t| t["url"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    common::wait_for("the person's tab", Duration::from_secs(10), || async {
        list().await.contains(&persons_tab).then_some(())
    })
    .await;

    let b =
        Browser::from_config(&config::Browser { cdp_url: cdp_url.clone(), ..browser_config(web, 10, 2 * 1024 * 1024) })
            .unwrap();
    assert!(b.probe().await.unwrap().contains("attached"), "probe names the attached browser");
    let page = b.browse(&web.url("/"), never()).await.unwrap();
    assert_eq!(page.title, PAGE_TITLE);
    let hostile = b.browse(&web.url("/hostile/img"), never()).await.unwrap();
    assert!(hostile.blocked_requests >= 1);
    assert!(matches!(b.browse(&web.url("/hostile/redirect"), never()).await, Err(BrowseError::Blocked(_))));
    assert_eq!(b.browser_contexts().await.unwrap(), 0);

    // The person's tab: still open, still where it was, and never attached to by the agent.
    let cdp = conclave_agent::browser::cdp::Cdp::connect(
        reqwest::get(format!("{cdp_url}/json/version")).await.unwrap().json::<serde_json::Value>().await.unwrap()
            ["webSocketDebuggerUrl"]
            .as_str()
            .unwrap(),
    )
    .await
    .unwrap();
    let targets = cdp
        .call(None, chromiumoxide::cdp::browser_protocol::target::GetTargetsParams::default())
        .await
        .unwrap()
        .target_infos;
    let tab = targets.iter().find(|t| t.url == persons_tab).expect("the person's tab is still open");
    assert!(!tab.attached, "the agent attached to the person's tab");
    drop(b);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(version_ok().await, "the shared Chromium was closed");
    assert!(list().await.contains(&persons_tab));
    assert_secret_untouched(web);
}

#[tokio::test]
async fn the_probe_names_the_browser() {
    let web = Web::get();
    let b = browser(web);
    let line = b.probe().await.unwrap();
    assert!(line.contains("Chrome/") && line.contains("launched /usr/bin/chromium"), "{line}");
    let broken = Browser::from_config(&config::Browser {
        chromium_path: "/nonexistent/chromium".into(),
        ..browser_config(web, 5, 1 << 20)
    })
    .unwrap();
    let err = broken.probe().await.unwrap_err();
    assert!(matches!(&err, BrowseError::Unavailable(m) if m.contains("/nonexistent/chromium")), "{err:?}");
    let r = broken.browse(&web.url("/"), never()).await;
    assert!(matches!(r, Err(BrowseError::Unavailable(_))), "{r:?}");
}
