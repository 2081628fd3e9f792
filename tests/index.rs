//! Room history into Chroma and `!search`, on a real Synapse, a real Chroma and a real embedder.

mod common;

use common::agent::{Agent, Options};
use common::chroma::chroma;
use common::client::User;
use common::embedder::{MODEL, embedder};
use common::synapse::synapse;
use common::wait_for;
use conclave_agent::rag::ChromaClient;
use std::time::Duration;

#[tokio::test]
async fn messages_are_indexed_with_metadata_and_found_only_in_their_room() {
    let config = chroma().config("index");
    let extra = format!(
        "[llm]\nembedding_base_url = \"{}\"\nembedding_model = \"{MODEL}\"\n\
         [chroma]\nurl = \"{}\"\ncollection = \"{}\"\n",
        embedder().base_url,
        config.url,
        config.collection
    );
    let agent = Agent::start(synapse().slot(), Options { extra, ..Options::default() }).await;
    let alice = User::register("alice").await;
    let room = alice.group_room_with(&agent.user_id()).await;
    let other = alice.group_room_with(&agent.user_id()).await;
    let id = alice.send_text(&room, "The production deploy failed because the database migration timed out.").await;
    alice.send_text(&room, "Lunch on Friday is at noon.").await;
    alice.send_text(&other, "Secret: the other room's deploy notes.").await;

    let chroma = ChromaClient::new(&config, Duration::from_secs(10)).unwrap();
    let stored = wait_for("the message in Chroma", Duration::from_secs(60), || async {
        chroma.get(&[id.as_str()]).await.ok().and_then(|mut r| r.pop())
    })
    .await;
    assert_eq!(stored.meta.room_id, room);
    assert_eq!(stored.meta.sender, alice.user_id);
    assert!(stored.meta.ts > 0);
    assert_eq!(stored.meta.thread_id, None);
    wait_for("all three indexed", Duration::from_secs(60), || async {
        (chroma.count().await.ok()? == 3).then_some(())
    })
    .await;

    let ask = alice.send_text(&room, "!search why did the release break?").await;
    let reply = alice.wait_reply(&room, &agent.user_id(), &ask).await;
    let body = reply["content"]["body"].as_str().unwrap();
    let first = body.lines().nth(1).unwrap_or_default();
    assert!(first.contains("migration timed out"), "{body}");
    assert!(body.contains(&format!("https://matrix.to/#/{room}/{id}")), "{body}");
    assert!(!body.contains("other room"), "no cross-room results: {body}");
}
