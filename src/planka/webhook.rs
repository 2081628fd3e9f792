//! Planka's webhook deliveries (v2 and v1.22+): the body's shape, and the short notice a room
//! bound to the board gets for the few events people care about.
//!
//! Planka sends every event it knows, fire-and-forget; parsing is tolerant (unknown events and
//! fields are fine) and [`notice`] ignores everything it has no words for. Card names and comment
//! texts are user data: they are quoted, flattened to one line and shortened, never interpreted.

use serde::Deserialize;
use serde_json::Value;

/// One webhook POST body.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub event: String,
    pub data: Data,
    /// The same shape before the change, for updates; `null` or absent otherwise.
    #[serde(default)]
    pub prev_data: Option<Data>,
    /// Who acted.
    #[serde(default)]
    pub user: Option<Actor>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Data {
    /// The card, comment, list, ... the event is about; its shape depends on the event.
    #[serde(default)]
    pub item: Value,
    #[serde(default)]
    pub included: Included,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Included {
    #[serde(default)]
    pub projects: Vec<Named>,
    #[serde(default)]
    pub boards: Vec<Named>,
    #[serde(default)]
    pub lists: Vec<Named>,
    /// Comment events carry their card here.
    #[serde(default)]
    pub cards: Vec<Named>,
}

/// A project, board, list or card as the webhook includes it (system lists have no name).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Named {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub board_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Actor {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
}

/// What a room bound to `board_id` should be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub board_id: String,
    pub card_id: Option<String>,
    /// The Planka user who acted, so the agent can skip its own changes.
    pub actor_id: Option<String>,
    pub text: String,
}

/// The fields of a card or comment item that notices use; anything else is ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Item {
    id: Option<String>,
    name: Option<String>,
    text: Option<String>,
    list_id: Option<String>,
    board_id: Option<String>,
    card_id: Option<String>,
    is_closed: Option<bool>,
}

impl Item {
    fn of(data: &Data) -> Self {
        serde_json::from_value(data.item.clone()).unwrap_or_default()
    }
}

const MAX_NAME: usize = 80;
const MAX_TEXT: usize = 200;

/// The notice for one delivery: card created, moved to another list, closed, or commented on.
/// `None` for every other event or change, and when the board cannot be told.
pub fn notice(delivery: &Delivery) -> Option<Notice> {
    let actor = delivery
        .user
        .as_ref()
        .and_then(|u| u.name.as_deref().filter(|n| !n.is_empty()).or(u.username.as_deref()))
        .map(|n| one_line(n, MAX_NAME))
        .unwrap_or_else(|| "Someone".into());
    let actor_id = delivery.user.as_ref().map(|u| u.id.clone());
    let item = Item::of(&delivery.data);
    let list_name = |id: &Option<String>| -> String {
        let lists =
            delivery.data.included.lists.iter().chain(delivery.prev_data.iter().flat_map(|p| &p.included.lists));
        id.as_ref()
            .and_then(|id| lists.filter(|l| &l.id == id).find_map(|l| l.name.as_deref()))
            .map(|n| format!("“{}”", one_line(n, MAX_NAME)))
            .unwrap_or_else(|| "another list".into())
    };
    let (board_id, card_id, text) = match delivery.event.as_str() {
        "cardCreate" => {
            let card = quoted(item.name.as_deref());
            (item.board_id.clone()?, item.id.clone(), format!("{actor} created {card} in {}", list_name(&item.list_id)))
        }
        "cardUpdate" => {
            let prev = Item::of(delivery.prev_data.as_ref()?);
            let card = quoted(item.name.as_deref());
            let moved = item.list_id.is_some() && prev.list_id.is_some() && item.list_id != prev.list_id;
            let closed = item.is_closed == Some(true) && prev.is_closed == Some(false);
            let text = if moved {
                let to = list_name(&item.list_id);
                let from = list_name(&prev.list_id);
                format!("{actor} moved {card} from {from} to {to}{}", if closed { " and closed it" } else { "" })
            } else if closed {
                format!("{actor} closed {card}")
            } else {
                return None;
            };
            (item.board_id.clone()?, item.id.clone(), text)
        }
        "commentCreate" => {
            let included = &delivery.data.included;
            let card = item.card_id.as_ref().and_then(|id| included.cards.iter().find(|c| &c.id == id));
            let board_id = card
                .and_then(|c| c.board_id.clone())
                .or_else(|| (included.boards.len() == 1).then(|| included.boards[0].id.clone()))?;
            let card_name = card.map(|c| quoted(c.name.as_deref())).unwrap_or_else(|| "a card".into());
            let text = one_line(item.text.as_deref().unwrap_or_default(), MAX_TEXT);
            (board_id, item.card_id.clone(), format!("{actor} commented on {card_name}: {text}"))
        }
        _ => return None,
    };
    Some(Notice { board_id, card_id, actor_id, text })
}

fn quoted(name: Option<&str>) -> String {
    match name {
        Some(n) if !n.trim().is_empty() => format!("“{}”", one_line(n, MAX_NAME)),
        _ => "a card".into(),
    }
}

/// Whitespace runs (newlines included) become one space; longer texts end in `…`.
fn one_line(text: &str, max_chars: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max_chars {
        flat
    } else {
        let mut cut: String = flat.chars().take(max_chars - 1).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BOARD: &str = "1913536964640900001";

    fn included() -> Value {
        json!({
            "projects": [{"id": "1913536964640900000", "name": "Conclave", "extra": true}],
            "boards": [{"id": BOARD, "projectId": "1913536964640900000", "name": "Dev"}],
            "lists": [
                {"id": "11", "boardId": BOARD, "type": "active", "name": "To do", "position": 65536},
                {"id": "12", "boardId": BOARD, "type": "closed", "name": "Done", "position": 131072},
                {"id": "13", "boardId": BOARD, "type": "trash", "name": null, "position": null}
            ]
        })
    }

    fn card(list: &str, closed: bool) -> Value {
        json!({"id": "1913536964640900777", "type": "project", "name": "Fix the\nlogin redirect", "listId": list,
               "boardId": BOARD, "position": 65536, "isClosed": closed, "unknownField": [1, 2]})
    }

    fn delivery(event: &str, item: Value, prev: Option<Value>) -> Delivery {
        let body = json!({
            "event": event,
            "data": {"item": item, "included": included()},
            "prevData": prev.map(|p| json!({"item": p, "included": included()})),
            "user": {"id": "1913536964640900042", "name": "Alice", "username": "alice", "role": "admin"}
        });
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn notices_for_the_events_people_follow() {
        let comment = json!({"id": "5", "text": "Looks good\n\nto me", "cardId": "1913536964640900777", "userId": "1"});
        let mut with_card = delivery("commentCreate", comment.clone(), None);
        with_card.data.included.cards =
            vec![Named { id: "1913536964640900777".into(), name: Some("Fix it".into()), board_id: Some(BOARD.into()) }];
        let cases: Vec<(&str, Delivery, Option<&str>)> = vec![
            (
                "card created",
                delivery("cardCreate", card("11", false), None),
                Some("Alice created “Fix the login redirect” in “To do”"),
            ),
            (
                "card moved to a closed list",
                delivery("cardUpdate", card("12", true), Some(card("11", false))),
                Some("Alice moved “Fix the login redirect” from “To do” to “Done” and closed it"),
            ),
            (
                "card moved back",
                delivery("cardUpdate", card("11", false), Some(card("12", true))),
                Some("Alice moved “Fix the login redirect” from “Done” to “To do”"),
            ),
            (
                "card moved to a list not included",
                delivery("cardUpdate", card("99", false), Some(card("11", false))),
                Some("Alice moved “Fix the login redirect” from “To do” to another list"),
            ),
            (
                "card closed in place",
                delivery("cardUpdate", card("11", true), Some(card("11", false))),
                Some("Alice closed “Fix the login redirect”"),
            ),
            ("card renamed: nothing", delivery("cardUpdate", card("11", false), Some(card("11", false))), None),
            ("update without prevData: nothing", delivery("cardUpdate", card("12", true), None), None),
            ("comment with its card", with_card, Some("Alice commented on “Fix it”: Looks good to me")),
            (
                "comment, board from included",
                delivery("commentCreate", comment, None),
                Some("Alice commented on a card: Looks good to me"),
            ),
            ("card deleted: nothing", delivery("cardDelete", card("11", false), None), None),
            ("unknown event: nothing", delivery("somethingNew", json!({"whatever": [1]}), None), None),
            ("odd item shape: nothing", delivery("cardCreate", json!("not an object"), None), None),
        ];
        for (name, d, want) in cases {
            let got = notice(&d);
            assert_eq!(got.as_ref().map(|n| n.text.as_str()), want, "{name}");
            if let Some(n) = got {
                assert_eq!(n.board_id, BOARD, "{name}");
                assert_eq!(n.card_id.as_deref(), Some("1913536964640900777"), "{name}");
                assert_eq!(n.actor_id.as_deref(), Some("1913536964640900042"), "{name}");
            }
        }
    }

    #[test]
    fn tolerates_minimal_bodies_and_shortens_long_texts() {
        let long = "x".repeat(500);
        let body = json!({"event": "commentCreate", "data": {"item": {"text": long, "cardId": "7"},
                          "included": {"boards": [{"id": BOARD}]}}});
        let d: Delivery = serde_json::from_value(body).unwrap();
        let n = notice(&d).unwrap();
        assert!(n.text.starts_with("Someone commented on a card: xxx"), "{}", n.text);
        assert!(n.text.ends_with('…') && n.text.chars().count() < 260, "{}", n.text);
        assert_eq!(n.actor_id, None);

        let bare: Delivery = serde_json::from_str(r#"{"event":"listCreate","data":{"item":{}}}"#).unwrap();
        assert_eq!(notice(&bare), None);
    }
}
