//! A homeserver restart under a running agent: Synapse on SQLite numbers its transactions from 1
//! again afterwards (it empties its table of them as they are delivered), so txn ids the agent
//! has seen come back with new events. This binary has its own Synapse, since restarting it
//! would disturb the other tests sharing one.

mod common;

use common::agent::{Agent, Options};
use common::client::User;
use common::synapse::synapse;

fn body(event: &serde_json::Value) -> &str {
    event["content"]["body"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn messages_after_a_homeserver_restart_are_answered() {
    let agent = Agent::start(synapse().slot(), Options::default()).await;
    let alice = User::register("alice").await;
    let room = alice.room_with(&agent.user_id()).await;
    for _ in 0..3 {
        let ping = alice.send_text(&room, "!ping").await;
        alice.wait_reply(&room, &agent.user_id(), &ping).await;
    }
    synapse().restart();
    // The agent sees txn ids again that it saw before, now carrying these events.
    for _ in 0..3 {
        let ping = alice.send_text(&room, "!ping").await;
        let pong = alice.wait_reply(&room, &agent.user_id(), &ping).await;
        assert!(body(&pong).contains("pong"), "{pong}");
    }
    let reused = agent.log().matches("transaction seen before").count();
    assert_eq!(reused, 0, "a delivery was taken for a retry:\n{}", agent.log());
}
