//! `bootstrap`: the workspace's rooms (`rooms.toml`) created as the agent, idempotently.
//!
//! Each room is found by its alias first, so a second run (every boot runs it) reuses the room and
//! sends nothing when it already matches: no second room, no repeated invite, no state event that
//! changes nothing. What people changed since (a new name or topic, someone who left) is kept.

use crate::config::Config;
use crate::matrix::{MatrixClient, MatrixError, NewRoom, encryption_content};
use crate::registration::Namespace;
use ruma::events::room::member::MembershipState;
use ruma::{OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Power level of the workspace's admins in every bootstrapped room.
const ADMIN_LEVEL: i64 = 100;

/// `rooms.toml` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomsFile {
    /// Users with power level 100 in every room (localparts or full user ids).
    #[serde(default)]
    admins: Vec<String>,
    #[serde(default)]
    rooms: Vec<RoomEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomEntry {
    alias: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    topic: String,
    encrypted: bool,
    #[serde(default)]
    public: bool,
    #[serde(default)]
    invite: Vec<String>,
    /// Coding agents (`pi`) whose ghost users join the room.
    #[serde(default)]
    agents: Vec<String>,
}

/// One room of the plan, every name resolved against this homeserver.
#[derive(Debug, Clone)]
pub struct RoomPlan {
    pub alias: OwnedRoomAliasId,
    pub room: NewRoom,
    pub admins: Vec<OwnedUserId>,
    pub ghosts: Vec<OwnedUserId>,
}

/// The default rooms file: `rooms.toml` beside the config file.
pub fn default_rooms_path(config: &Config) -> PathBuf {
    config.dir.clone().unwrap_or_default().join("rooms.toml")
}

/// Reads and checks a rooms file; every error names the room and the key.
pub fn load_plan(path: &Path, config: &Config) -> anyhow::Result<Vec<RoomPlan>> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    parse_plan(&text, config).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn parse_plan(text: &str, config: &Config) -> anyhow::Result<Vec<RoomPlan>> {
    let file: RoomsFile = toml::from_str(text)?;
    let ns = Namespace::from_config(config)?;
    let server = ns.server_name().to_owned();
    let user = |what: &str, s: &str| -> anyhow::Result<OwnedUserId> {
        let id = if s.starts_with('@') { s.to_owned() } else { format!("@{s}:{server}") };
        let bad = |reason: String| anyhow::anyhow!("{what}: {s:?} is not a localpart or user id{reason}");
        let id = UserId::parse(&id).map_err(|e| bad(format!(": {e}")))?;
        // ruma accepts historical ids too; the users the stack makes all follow today's grammar.
        if !crate::config::is_conforming_localpart(id.localpart()) {
            return Err(bad(String::new()));
        }
        Ok(id)
    };
    let admins = file.admins.iter().map(|a| user("admins", a)).collect::<anyhow::Result<Vec<_>>>()?;
    let mut plans: Vec<RoomPlan> = Vec::new();
    for entry in file.rooms {
        let what = format!("room {:?}", entry.alias);
        if entry.alias.is_empty() || !crate::config::is_conforming_localpart(&entry.alias) {
            anyhow::bail!("{what}: alias is the part after # (a-z, 0-9 and . _ = - / +), without the server");
        }
        if !ns.owns_alias(&entry.alias) {
            anyhow::bail!(
                "{what}: the agent may create only aliases that start with appservice.alias_prefix ({:?})",
                config.appservice.alias_prefix
            );
        }
        let alias = OwnedRoomAliasId::try_from(format!("#{}:{server}", entry.alias))
            .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
        if plans.iter().any(|p| p.alias == alias) {
            anyhow::bail!("{what}: listed twice");
        }
        let invite =
            entry.invite.iter().map(|u| user(&format!("{what} invite"), u)).collect::<anyhow::Result<Vec<_>>>()?;
        let ghosts = entry
            .agents
            .iter()
            .map(|a| {
                // Only configured agents have ghosts, and only in rooms their globs allow.
                let Some(configured) = config.agents.get(a) else {
                    anyhow::bail!("{what} agents: {a:?} has no [agents.{a}] table in the config");
                };
                let rooms = crate::ghosts::RoomPolicy::new(&configured.rooms).map_err(anyhow::Error::msg)?;
                if !(rooms.any_room() || rooms.allows("", &[alias.to_string()])) {
                    anyhow::bail!("{what} agents: agents.{a}.rooms does not allow {alias}");
                }
                ns.ghost(a).ok_or_else(|| anyhow::anyhow!("{what} agents: {a:?} is not a coding agent name"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let room = NewRoom {
            alias: entry.alias,
            name: entry.name,
            topic: entry.topic,
            public: entry.public,
            encrypted: entry.encrypted,
            invite: invite.into_iter().filter(|u| u != ns.sender()).collect(),
        };
        plans.push(RoomPlan { alias, room, admins: admins.clone(), ghosts });
    }
    Ok(plans)
}

/// What a run did to one room.
#[derive(Debug, Default)]
pub struct Outcome {
    pub room_id: Option<OwnedRoomId>,
    pub created: bool,
    /// Each change made to an existing room (or after creating it), in words.
    pub changes: Vec<String>,
    /// Differences left alone on purpose, in words.
    pub notes: Vec<String>,
}

/// `bootstrap`: applies `plan`, printing one line per room; `Ok(false)` when a room failed.
pub async fn run(config: &Config, rooms_path: &Path) -> anyhow::Result<bool> {
    let plan = load_plan(rooms_path, config)?;
    let matrix = MatrixClient::new(
        &config.homeserver.url,
        config.appservice.as_token.clone(),
        Duration::from_secs(config.homeserver.timeout_secs),
    )?;
    let agent = config.sender_user_id()?;
    let mut ok = true;
    for room in &plan {
        match apply(&matrix, &agent, room).await {
            Ok(outcome) => println!("{}", describe(room, &outcome)),
            Err(e) => {
                ok = false;
                println!("{}  FAILED  {e}", room.alias);
            }
        }
    }
    Ok(ok)
}

fn describe(plan: &RoomPlan, outcome: &Outcome) -> String {
    let id = outcome.room_id.as_ref().map_or("?", |r| r.as_str());
    let state = match (outcome.created, outcome.changes.is_empty()) {
        (true, _) => "created",
        (false, true) => "unchanged",
        (false, false) => "updated",
    };
    let mut line = format!("{}  {state}  {id}", plan.alias);
    if !outcome.changes.is_empty() {
        line.push_str(&format!("  ({})", outcome.changes.join("; ")));
    }
    for note in &outcome.notes {
        line.push_str(&format!("  note: {note}"));
    }
    line
}

/// Finds or creates one room and brings it to the plan.
pub async fn apply(matrix: &MatrixClient, agent: &UserId, plan: &RoomPlan) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::default();
    let room_id = match matrix.resolve_alias(&plan.alias).await? {
        Some(id) => id,
        None => match matrix.create_room(agent, &plan.room).await {
            Ok(id) => {
                outcome.created = true;
                id
            }
            // Made by someone else between our look-up and our create: use theirs.
            Err(e) if e.errcode() == Some("M_ROOM_IN_USE") => matrix
                .resolve_alias(&plan.alias)
                .await?
                .ok_or_else(|| anyhow::anyhow!("the alias is taken but does not resolve"))?,
            Err(e) => return Err(e.into()),
        },
    };
    outcome.room_id = Some(room_id.clone());
    if !outcome.created {
        ensure_agent_joined(matrix, agent, &room_id).await?;
        reconcile_details(matrix, agent, &room_id, plan, &mut outcome).await?;
        invite_missing(matrix, agent, &room_id, &plan.room.invite, &mut outcome).await?;
    }
    ensure_admins(matrix, agent, &room_id, &plan.admins, &mut outcome).await?;
    let joined = join_ghosts(matrix, agent, &room_id, &plan.ghosts).await?;
    if !joined.is_empty() {
        let names: Vec<&str> = joined.iter().map(|u| u.as_str()).collect();
        outcome.changes.push(format!("{} joined", names.join(", ")));
    }
    Ok(outcome)
}

async fn ensure_agent_joined(matrix: &MatrixClient, agent: &UserId, room: &RoomId) -> anyhow::Result<()> {
    // Asked first: a join while joined may still send a member event.
    if matches!(matrix.membership(agent, room, agent).await, Ok(Some(MembershipState::Join))) {
        return Ok(());
    }
    match matrix.join(agent, room).await {
        Ok(()) => Ok(()),
        Err(e) => anyhow::bail!("the room exists but the agent cannot join it ({e}): invite {agent} there"),
    }
}

/// Name and topic are set when missing, never overwritten (people may have changed them);
/// encryption is turned on when the plan asks for it (it cannot be turned off).
async fn reconcile_details(
    matrix: &MatrixClient,
    agent: &UserId,
    room: &RoomId,
    plan: &RoomPlan,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    for (event_type, field, want) in
        [("m.room.name", "name", &plan.room.name), ("m.room.topic", "topic", &plan.room.topic)]
    {
        if want.is_empty() {
            continue;
        }
        let current = matrix.state_field(agent, room, event_type, field).await?;
        match current {
            Some(c) if !c.is_empty() => {
                if c != *want {
                    outcome.notes.push(format!("{field} differs from rooms.toml; kept"));
                }
            }
            _ => {
                matrix.set_state(agent, room, event_type, "", &serde_json::json!({ field: want })).await?;
                outcome.changes.push(format!("{field} set"));
            }
        }
    }
    let encrypted = matrix.state_json(agent, room, "m.room.encryption", "").await?.is_some();
    match (plan.room.encrypted, encrypted) {
        (true, false) => {
            matrix.set_state(agent, room, "m.room.encryption", "", &encryption_content()).await?;
            outcome.changes.push("encryption on".into());
        }
        (false, true) => outcome.notes.push("encrypted, though rooms.toml says not (it cannot be undone)".into()),
        _ => {}
    }
    Ok(())
}

/// Invites the listed users who never had a membership here: someone who left or was banned is
/// not invited again by a later boot.
async fn invite_missing(
    matrix: &MatrixClient,
    agent: &UserId,
    room: &RoomId,
    users: &[OwnedUserId],
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    for user in users {
        match matrix.membership(agent, room, user).await? {
            None => {
                matrix.invite(agent, room, user).await?;
                outcome.changes.push(format!("invited {user}"));
            }
            Some(MembershipState::Leave | MembershipState::Ban) => {
                outcome.notes.push(format!("{user} left; not invited again"));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Gives each admin power level 100, in one `m.room.power_levels` event, only when one lacks it.
async fn ensure_admins(
    matrix: &MatrixClient,
    agent: &UserId,
    room: &RoomId,
    admins: &[OwnedUserId],
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    if admins.is_empty() {
        return Ok(());
    }
    let mut content = matrix
        .state_json(agent, room, "m.room.power_levels", "")
        .await?
        .ok_or_else(|| anyhow::anyhow!("the room has no power levels"))?;
    let missing = missing_admins(&content, admins);
    if missing.is_empty() {
        return Ok(());
    }
    let users = content
        .as_object_mut()
        .ok_or_else(|| anyhow::anyhow!("power levels are not an object"))?
        .entry("users")
        .or_insert_with(|| serde_json::json!({}));
    let users = users.as_object_mut().ok_or_else(|| anyhow::anyhow!("power levels' users are not an object"))?;
    for admin in &missing {
        users.insert(admin.to_string(), ADMIN_LEVEL.into());
    }
    matrix.set_state(agent, room, "m.room.power_levels", "", &content).await.map_err(|e| match e.errcode() {
        Some("M_FORBIDDEN") => anyhow::anyhow!("the agent may not change the power levels here: {e}"),
        _ => e.into(),
    })?;
    let names: Vec<String> = missing.iter().map(|u| u.to_string()).collect();
    outcome.changes.push(format!("{} made admin", names.join(", ")));
    Ok(())
}

/// The admins whose power level is below 100 in `power_levels`.
fn missing_admins(power_levels: &serde_json::Value, admins: &[OwnedUserId]) -> Vec<OwnedUserId> {
    admins.iter().filter(|a| power_levels["users"][a.as_str()].as_i64().unwrap_or(0) < ADMIN_LEVEL).cloned().collect()
}

/// Brings the coding agents' ghost users into `room`: registered, invited by the agent, joined.
/// Returns the ghosts that joined now (one already in the room is left alone).
pub async fn join_ghosts(
    matrix: &MatrixClient,
    agent: &UserId,
    room: &RoomId,
    ghosts: &[OwnedUserId],
) -> Result<Vec<OwnedUserId>, MatrixError> {
    let mut joined = Vec::new();
    for ghost in ghosts {
        let membership = matrix.membership(agent, room, ghost).await?;
        if membership == Some(MembershipState::Join) {
            continue;
        }
        matrix.ensure_registered(ghost.localpart()).await?;
        if membership != Some(MembershipState::Invite) {
            matrix.invite(agent, room, ghost).await?;
        }
        matrix.join(ghost, room).await?;
        joined.push(ghost.clone());
    }
    Ok(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_toml(
            "[homeserver]\nserver_name = \"conclave.local\"\n[appservice]\nas_token = \"a1\"\nhs_token = \"h2\"\n\
             [agents.pi]\n[agents.claude]\nrooms = [\"#dev:*\"]\n",
        )
        .unwrap()
    }

    #[test]
    fn names_resolve_against_the_homeserver() {
        let text = r#"
            admins = ["admin"]
            [[rooms]]
            alias = "fleet-ops"
            name = "Fleet Ops"
            encrypted = false
            invite = ["admin", "@ops:conclave.local", "agent"]
            agents = ["pi"]
        "#;
        let plan = parse_plan(text, &config()).unwrap();
        assert_eq!(plan[0].alias.as_str(), "#fleet-ops:conclave.local");
        assert_eq!(plan[0].admins[0].as_str(), "@admin:conclave.local");
        let invite: Vec<&str> = plan[0].room.invite.iter().map(|u| u.as_str()).collect();
        // The agent creates the room: it never invites itself.
        assert_eq!(invite, ["@admin:conclave.local", "@ops:conclave.local"]);
        assert_eq!(plan[0].ghosts[0].as_str(), "@agent-pi:conclave.local");
    }

    #[test]
    fn bad_files_are_refused_with_the_room_named() {
        let cases = [
            ("server in alias", "[[rooms]]\nalias = \"x:other\"\nencrypted = false", "alias"),
            ("hash in alias", "[[rooms]]\nalias = \"#x\"\nencrypted = false", "alias"),
            ("outside the namespace", "[[rooms]]\nalias = \"dev\"\nencrypted = false", "alias_prefix"),
            (
                "twice",
                "[[rooms]]\nalias = \"fleet-x\"\nencrypted = false\n[[rooms]]\nalias = \"fleet-x\"\nencrypted = false",
                "twice",
            ),
            ("encryption unsaid", "[[rooms]]\nalias = \"fleet-x\"", "encrypted"),
            ("unknown key", "[[rooms]]\nalias = \"fleet-x\"\nencrypted = false\ninvites = []", "invites"),
            ("bad user", "[[rooms]]\nalias = \"fleet-x\"\nencrypted = false\ninvite = [\"Not A User\"]", "invite"),
            ("bad agent", "[[rooms]]\nalias = \"fleet-x\"\nencrypted = false\nagents = [\"P I\"]", "agents"),
            (
                "unconfigured agent",
                "[[rooms]]\nalias = \"fleet-x\"\nencrypted = false\nagents = [\"bob\"]",
                "[agents.bob]",
            ),
            (
                "room not in its globs",
                "[[rooms]]\nalias = \"fleet-x\"\nencrypted = false\nagents = [\"claude\"]",
                "agents.claude.rooms",
            ),
        ];
        for (name, text, want) in cases {
            let err = parse_plan(text, &config()).expect_err(name).to_string();
            assert!(err.contains(want), "{name}: {err}");
        }
    }

    #[test]
    fn only_admins_below_100_are_missing() {
        let admins: Vec<OwnedUserId> = ["@a:x", "@b:x", "@c:x"].iter().map(|u| UserId::parse(*u).unwrap()).collect();
        let pl = serde_json::json!({"users": {"@a:x": 100, "@b:x": 50}});
        let missing: Vec<String> = missing_admins(&pl, &admins).iter().map(|u| u.to_string()).collect();
        assert_eq!(missing, ["@b:x", "@c:x"]);
        assert!(
            missing_admins(&serde_json::json!({"users": {"@a:x": 100, "@b:x": 100, "@c:x": 150}}), &admins).is_empty()
        );
    }
}
