//! Planka's values as the agent uses them, and the wire shapes they are read from.
//!
//! Ids stay `String`: Planka sends 64-bit integers as strings, and any numeric type on the way
//! (f64 in particular) would corrupt them.

use super::PlankaError;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Board {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub position: f64,
}

/// The lists a card can live in. Planka's system lists (`archive`, `trash`) are never shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Active,
    /// Cards moved here are marked closed by Planka.
    Closed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct List {
    pub id: String,
    pub board_id: String,
    pub name: String,
    pub kind: ListKind,
    pub position: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Card {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub list_id: String,
    pub board_id: String,
    /// 0 for cards in system lists, where Planka keeps no position.
    pub position: f64,
    pub is_closed: bool,
    /// The Planka user who made the card.
    pub creator_user_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Comment {
    pub id: String,
    pub card_id: String,
    pub user_id: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct User {
    pub id: String,
    /// Planka allows users without a username (email login only).
    #[serde(default)]
    pub username: Option<String>,
    /// Hidden from non-admins in some answers.
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub name: String,
}

/// A project and its boards, sorted by position.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectBoards {
    pub project: Project,
    pub boards: Vec<Board>,
}

/// One board as `GET /api/boards/{id}` shows it: its user-visible lists sorted by position, the
/// cards in them, and the users it mentions.
#[derive(Debug, Clone, PartialEq)]
pub struct BoardView {
    pub board: Board,
    pub lists: Vec<List>,
    pub cards: Vec<Card>,
    pub users: Vec<User>,
}

impl BoardView {
    pub fn list(&self, list_id: &str) -> Option<&List> {
        self.lists.iter().find(|l| l.id == list_id)
    }

    /// The cards of one list, in board order.
    pub fn cards_in<'a>(&'a self, list_id: &'a str) -> impl Iterator<Item = &'a Card> + 'a {
        self.cards.iter().filter(move |c| c.list_id == list_id)
    }

    /// The position that puts a new card at the end of `list_id`: Planka spaces positions by
    /// 65536, so appending is the list's highest position plus that.
    pub fn append_position(&self, list_id: &str) -> f64 {
        self.cards_in(list_id).map(|c| c.position).fold(0.0, f64::max) + POSITION_GAP
    }
}

/// The spacing Planka uses between positions.
pub const POSITION_GAP: f64 = 65536.0;

// ---- Wire shapes. `type` is optional here only so that a v1 server can be recognised. ----

#[derive(Deserialize)]
pub(crate) struct One<T, I = Empty> {
    pub item: T,
    #[serde(default)]
    pub included: I,
}

#[derive(Deserialize)]
pub(crate) struct Many<T, I = Empty> {
    pub items: Vec<T>,
    #[serde(default)]
    pub included: I,
}

#[derive(Default, Deserialize)]
pub(crate) struct Empty {}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireProject {
    pub id: String,
    pub name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireBoard {
    pub id: String,
    pub project_id: String,
    pub name: String,
    #[serde(default)]
    pub position: Option<f64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireList {
    pub id: String,
    pub board_id: String,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `null` on system lists.
    pub name: Option<String>,
    /// `null` on system lists.
    pub position: Option<f64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireCard {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub list_id: String,
    pub board_id: String,
    #[serde(default)]
    pub position: Option<f64>,
    #[serde(default)]
    pub is_closed: bool,
    #[serde(default)]
    pub creator_user_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireComment {
    pub id: String,
    pub card_id: String,
    pub user_id: String,
    pub text: String,
}

#[derive(Default, Deserialize)]
pub(crate) struct ProjectsIncluded {
    #[serde(default)]
    pub boards: Vec<WireBoard>,
}

#[derive(Default, Deserialize)]
pub(crate) struct BoardIncluded {
    #[serde(default)]
    pub lists: Vec<WireList>,
    #[serde(default)]
    pub cards: Vec<WireCard>,
    #[serde(default)]
    pub users: Vec<User>,
}

fn v1(what: &str) -> PlankaError {
    PlankaError::Unsupported(format!("its {what} have no `type`, as in Planka v1"))
}

impl From<WireBoard> for Board {
    fn from(b: WireBoard) -> Self {
        Self { id: b.id, project_id: b.project_id, name: b.name, position: b.position.unwrap_or_default() }
    }
}

impl From<WireProject> for Project {
    fn from(p: WireProject) -> Self {
        Self { id: p.id, name: p.name }
    }
}

impl WireList {
    /// The list, `None` for system and unknown kinds of list; an error for a v1 list.
    pub fn into_list(self) -> Result<Option<List>, PlankaError> {
        let kind = match self.kind.as_deref() {
            None => return Err(v1("lists")),
            Some("active") => ListKind::Active,
            Some("closed") => ListKind::Closed,
            Some(_) => return Ok(None),
        };
        Ok(Some(List {
            id: self.id,
            board_id: self.board_id,
            name: self.name.unwrap_or_default(),
            kind,
            position: self.position.unwrap_or_default(),
        }))
    }
}

impl WireCard {
    pub fn into_card(self) -> Result<Card, PlankaError> {
        self.kind.ok_or_else(|| v1("cards"))?;
        Ok(Card {
            id: self.id,
            name: self.name,
            description: self.description,
            list_id: self.list_id,
            board_id: self.board_id,
            position: self.position.unwrap_or_default(),
            is_closed: self.is_closed,
            creator_user_id: self.creator_user_id,
        })
    }
}

impl From<WireComment> for Comment {
    fn from(c: WireComment) -> Self {
        Self { id: c.id, card_id: c.card_id, user_id: c.user_id, text: c.text }
    }
}

/// Builds the board view: system lists dropped, lists by position, only cards of shown lists.
pub(crate) fn board_view(board: WireBoard, included: BoardIncluded) -> Result<BoardView, PlankaError> {
    let mut lists = Vec::new();
    for list in included.lists {
        lists.extend(list.into_list()?);
    }
    lists.sort_by(|a, b| a.position.total_cmp(&b.position));
    let mut cards = Vec::new();
    for card in included.cards {
        let card = card.into_card()?;
        if lists.iter().any(|l| l.id == card.list_id) {
            cards.push(card);
        }
    }
    cards.sort_by(|a, b| a.position.total_cmp(&b.position));
    Ok(BoardView { board: board.into(), lists, cards, users: included.users })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board_json(lists: &str, cards: &str) -> String {
        format!(
            r#"{{"item":{{"id":"1913536964640900110","projectId":"1913536964640900100","name":"B","position":65536}},
               "included":{{"lists":{lists},"cards":{cards},"users":[],"labels":[]}}}}"#
        )
    }

    #[test]
    fn board_skips_system_lists_and_sorts_by_position() {
        let lists = r#"[
            {"id":"3","boardId":"1","type":"closed","name":"Done","position":131072},
            {"id":"4","boardId":"1","type":"archive","name":null,"position":null},
            {"id":"2","boardId":"1","type":"active","name":"To do","position":65536},
            {"id":"5","boardId":"1","type":"trash","name":null,"position":null}]"#;
        let cards = r#"[
            {"id":"9007199254740993","type":"project","name":"big id","listId":"2","boardId":"1","position":65536,"isClosed":false},
            {"id":"11","type":"project","name":"trashed","listId":"5","boardId":"1","position":null,"isClosed":false}]"#;
        let one: One<WireBoard, BoardIncluded> = serde_json::from_str(&board_json(lists, cards)).unwrap();
        let view = board_view(one.item, one.included).unwrap();
        let names: Vec<_> = view.lists.iter().map(|l| (l.name.as_str(), l.kind)).collect();
        assert_eq!(names, [("To do", ListKind::Active), ("Done", ListKind::Closed)]);
        assert_eq!(view.cards.len(), 1);
        assert_eq!(view.cards[0].id, "9007199254740993", "ids above 2^53 survive");
        assert_eq!(view.append_position("2"), 131072.0);
        assert_eq!(view.append_position("3"), 65536.0);
    }

    #[test]
    fn lists_without_type_are_v1() {
        let lists = r#"[{"id":"2","boardId":"1","name":"To do","position":65536}]"#;
        let one: One<WireBoard, BoardIncluded> = serde_json::from_str(&board_json(lists, "[]")).unwrap();
        let err = board_view(one.item, one.included).unwrap_err();
        assert!(matches!(err, PlankaError::Unsupported(_)), "{err:?}");
        assert!(err.to_string().contains("Planka v2"), "{err}");
    }
}
