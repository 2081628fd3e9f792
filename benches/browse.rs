//! Browsing: the latency of one browse of a local page (fresh context, load, settle, text,
//! screenshot, dispose) p50/p99; the memory of this process (RSS) and of Chromium (PSS summed over
//! its process tree) after BENCH_BROWSES browses, against a bound; and 4 browses at once with max_tabs = 2.
//!
//! The pages come from the test site on 127.0.0.2 (tests/common/test_site.rs); Chromium is
//! Debian's, launched headless by the library.
//!
//! Run: `cargo bench --bench browse` (env: BENCH_BROWSES, default 100).

#[allow(dead_code)]
#[path = "../tests/common/test_site.rs"]
mod test_site;

use conclave_agent::browser::Browser;
use conclave_agent::config;
use std::time::{Duration, Instant};
use test_site::Web;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// VmRSS of one process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Proportional set size of one process, in KiB: shared pages split among their sharers, so
/// a sum over Chromium's processes does not count its shared memory once per process.
fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Pss:"))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// `pid` and every process below it (Chromium's renderers, GPU and utility processes).
fn tree(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        // The parent pid is the second field after the `(comm)`, which may hold spaces.
        let Some(after) = stat.rsplit_once(')').map(|(_, a)| a.to_owned()) else { continue };
        if let Some(ppid) = after.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
            parents.push((child, ppid));
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn config(web: &Web, max_tabs: usize) -> config::Browser {
    config::Browser {
        cdp_url: String::new(),
        chromium_path: "/usr/bin/chromium".into(),
        allow_hosts: vec![web.allow_entry()],
        max_tabs,
        page_timeout_secs: 30,
        max_page_bytes: 20 * 1024 * 1024,
    }
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_BROWSES").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let web = Web::get();
    let browser = Browser::from_config(&config(web, 2)).unwrap();
    let started = Instant::now();
    println!("chromium: {} (start {:?})", browser.probe().await.unwrap(), started.elapsed());
    let pid = browser.chromium_pid().await.unwrap();
    let me = std::process::id();
    let chromium_rss = || tree(pid).into_iter().map(pss_kib).sum::<u64>();

    // Warm up (first renderer start, allocator pools), then measure.
    for i in 0..5 {
        browser.browse(&web.url(&format!("/page/{i}")), std::future::pending()).await.unwrap();
    }
    let (agent_before, chromium_before) = (rss_kib(me), chromium_rss());
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let page = browser.browse(&web.url(&format!("/page/{i}")), std::future::pending()).await.unwrap();
        times.push(t.elapsed());
        assert_eq!(page.title, format!("Page {i}"));
        assert!(page.screenshot.bytes.len() > 1000);
    }
    times.sort();
    println!(
        "browse of a local page, {n} in a row: p50 {:?}  p99 {:?}  max {:?}",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().unwrap()
    );
    let (agent_after, chromium_after) = (rss_kib(me), chromium_rss());
    println!(
        "memory after {n} browses: agent RSS {} (was {} after warm-up, {:+.1} MiB); chromium PSS {} in {} processes (was {}, {:+.1} MiB)",
        mib(agent_after),
        mib(agent_before),
        (agent_after as f64 - agent_before as f64) / 1024.0,
        mib(chromium_after),
        tree(pid).len(),
        mib(chromium_before),
        (chromium_after as f64 - chromium_before as f64) / 1024.0,
    );
    println!(
        "contexts left open: {} (Chromium says {})",
        browser.open_contexts(),
        browser.browser_contexts().await.unwrap()
    );
    // The bound: no leak per browse. A context is ~10 MiB while open; 100 leaked would be far past it.
    let growth_bound_kib = 64 * 1024;
    assert!(agent_after.saturating_sub(agent_before) < growth_bound_kib, "the agent grew past 64 MiB");
    assert!(chromium_after.saturating_sub(chromium_before) < 2 * growth_bound_kib, "Chromium grew past 128 MiB");

    // 4 at once with max_tabs = 2: pages that take 500 ms to answer go in two rounds.
    let slow = web.url("/slow?ms=500");
    let t = Instant::now();
    let each = futures_util::future::join_all((0..4).map(|_| async {
        let t = Instant::now();
        browser.browse(&slow, std::future::pending()).await.unwrap();
        t.elapsed()
    }))
    .await;
    let one = {
        let t = Instant::now();
        browser.browse(&slow, std::future::pending()).await.unwrap();
        t.elapsed()
    };
    let wall = t.elapsed() - one;
    println!(
        "4 browses at once, max_tabs = 2, 500 ms pages: wall {wall:?} = {:.2} x one browse ({one:?}); each {:?}",
        wall.as_secs_f64() / one.as_secs_f64(),
        each
    );
}
