//! Uploads through the media repository and the `m.image` / `m.file` messages that show them,
//! against the real Synapse.

mod common;

use common::client::User;
use common::synapse::synapse;
use conclave_agent::matrix::{ImageMeta, MatrixClient, file_content, image_content, txn_id_for};
use conclave_agent::secret::Secret;
use ruma::{RoomId, UserId};
use serde_json::Value;
use std::time::Duration;

#[tokio::test]
async fn an_upload_is_downloadable_and_shown_as_an_image_and_a_file() {
    let slot = synapse().slot();
    let client =
        MatrixClient::new(&synapse().url, Secret::new(slot.as_token.clone()), Duration::from_secs(10)).unwrap();
    let me = UserId::parse(slot.user_id()).unwrap();
    let alice = User::register("alice").await;
    let room_id = alice.create_room(&[me.as_str()]).await;
    let room = <&RoomId>::try_from(room_id.as_str()).unwrap();
    client.join(&me, room).await.unwrap();

    // A real PNG (1x1): Synapse keeps the bytes as they were sent.
    let png: Vec<u8> = vec![
        0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52, 0, 0, 0, 1, 0, 0, 0, 1, 8,
        6, 0, 0, 0, 0x1f, 0x15, 0xc4, 0x89, 0, 0, 0, 13, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0,
        0xf0, 0x1f, 0, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d, 0x1d, 0, 0, 0, 0, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42,
        0x60, 0x82,
    ];
    let mxc = client.upload(&me, png.clone(), "image/png", "shot.png").await.unwrap();
    assert!(mxc.as_str().starts_with("mxc://test.local/"), "{mxc}");

    // Authenticated media (what current clients use), read as the agent: the same bytes and type come back.
    let (server, id) = mxc.parts().unwrap();
    let download = reqwest::Client::new()
        .get(format!("{}/_matrix/client/v1/media/download/{server}/{id}", synapse().url))
        .bearer_auth(&slot.as_token)
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    assert_eq!(download.headers()["content-type"], "image/png");
    assert_eq!(download.bytes().await.unwrap().to_vec(), png);

    let meta = ImageMeta { width: 1, height: 1, mimetype: "image/png".into(), size: png.len() as u64 };
    let image = image_content(mxc.clone(), "Screenshot of example.org", "shot.png", &meta);
    let image_id = client.send_message(&me, room, &txn_id_for("$t", "image"), &image).await.unwrap();
    let file = file_content(mxc.clone(), "shot.png", "image/png", png.len() as u64);
    let file_id = client.send_message(&me, room, &txn_id_for("$t", "file"), &file).await.unwrap();

    let timeline = alice.timeline(&room_id).await;
    let find = |id: &str| -> Value {
        timeline.iter().find(|e| e["event_id"] == id).unwrap_or_else(|| panic!("{id} not in {timeline:?}"))["content"]
            .clone()
    };
    let shown = find(image_id.as_str());
    assert_eq!(shown["msgtype"], "m.image");
    assert_eq!(shown["url"], mxc.as_str());
    assert_eq!((shown["info"]["w"].as_u64(), shown["info"]["h"].as_u64()), (Some(1), Some(1)));
    assert_eq!(shown["info"]["mimetype"], "image/png");
    assert_eq!(shown["info"]["size"].as_u64(), Some(png.len() as u64));
    let offered = find(file_id.as_str());
    assert_eq!(offered["msgtype"], "m.file");
    assert_eq!(offered["body"], "shot.png");
}
