//! Skiff's own status and log routes: one node's view of the cluster and its log.

use super::*;

pub(super) async fn skiff_status(State(api): Shared) -> ApiResult {
    let status = api.status().await?;
    let mut body = status_json(&status);
    body.insert("raft_address".into(), json!(api.raft_address(&status.membership, status.id)));
    body.insert("http_address".into(), json!(api.http_address(&status.membership, status.id)));
    body.insert("keyspace".into(), api.keyspace_json());
    Ok(axum::Json(body).into_response())
}

/// What a node says of itself and its peers, as `/v1/skiff/status` and the dashboard's
/// frames both show it.
pub(super) fn status_json(status: &NodeStatus) -> serde_json::Map<String, Json> {
    let body = json!({
        "id": status.id.to_string(),
        "role": status.role.to_string(),
        "term": status.term.0,
        "voted_for": status.vote.map(|id| id.to_string()),
        "leader": status.leader.map(|id| id.to_string()),
        "commit": status.commit.0,
        "applied": status.applied.0,
        "last_log": { "index": status.last_log_id.index.0, "term": status.last_log_id.term.0 },
        "snapshot_index": status.snapshot_index.0,
        "voters": id_list(&status.membership.voters),
        "learners": id_list(&status.membership.learners),
        "peers": peers_json(status),
    });
    fields(body)
}

/// The fields of an object made with `json!({ ... })`, to add more to or to add to another
/// (`json!` of braces is always an object; anything else has no fields).
pub(super) fn fields(object: Json) -> serde_json::Map<String, Json> {
    match object {
        Json::Object(fields) => fields,
        _ => serde_json::Map::new(),
    }
}

impl Api {
    /// The keyspace's size against the quota, and the quota alarm: `null`, or why writes
    /// that add bytes are refused (as etcd's `NOSPACE` alarm; it clears once space is freed).
    fn keyspace_json(&self) -> Json {
        let quota = self.limits.keyspace_quota_bytes;
        let used = self.published.used_bytes();
        let alarm = self.published.quota_alarm().map(|refused_at| {
            format!(
                "NOSPACE: the keyspace holds {used} bytes of keys and values; writes that could pass the quota \
                 of {refused_at} bytes are refused until keys are deleted"
            )
        });
        json!({
            "used_bytes": used,
            "quota_bytes": (quota > 0).then_some(quota),
            "alarm": alarm,
            "blocking_queries": self.blocking.count(),
            "watches": self.published.watches(),
        })
    }
}

/// Each other member as this node sees it: replication progress (on the leader) and the
/// transport's health. (`/v1/skiff/status` and the dashboard's frames.)
fn peers_json(status: &NodeStatus) -> Vec<Json> {
    status
        .peers
        .iter()
        .map(|peer| {
            json!({
                "id": peer.id.to_string(),
                "voter": peer.voter,
                "match": peer.match_index.map(|index| index.0),
                "next": peer.next_index.map(|index| index.0),
                "connected": peer.health.connected,
                "last_contact_ms": peer.health.last_contact.map(|at| at.elapsed().as_millis() as u64),
                "rtt_ms": peer.health.round_trip.map(|rtt| rtt.as_secs_f64() * 1000.0),
                "dropped_messages": peer.health.dropped_messages,
            })
        })
        .collect()
}

/// Node ids as text, in order.
pub(super) fn id_list(set: &std::collections::BTreeSet<NodeId>) -> Vec<String> {
    set.iter().map(ToString::to_string).collect()
}

/// The most entries `/v1/skiff/log` returns at once.
const MAX_LOG_PAGE: u64 = 1000;

pub(super) async fn skiff_log(State(api): Shared, uri: Uri) -> ApiResult {
    let query = Query::parse(&uri);
    let limit = query.number("limit")?.unwrap_or(100).clamp(1, MAX_LOG_PAGE);
    let from = query.number("from")?.map(Index);
    let page = api.node.log(from, limit as usize).await.map_err(|error| api.fail(error))?;
    let entries: Vec<Json> = page
        .entries
        .iter()
        .map(|entry| {
            let (kind, description) = match &entry.payload {
                Payload::Empty => ("empty", "(a new leader's first entry)".to_string()),
                Payload::Command(bytes) => match postcard::from_bytes::<Command>(bytes) {
                    Ok(command) => ("command", command.op.describe()),
                    Err(_) => ("command", format!("({} bytes, not a key-value command)", bytes.len())),
                },
                Payload::Membership(membership) => {
                    let ids = |set| id_list(set).join(" ");
                    let mut text = format!("voters {}", ids(&membership.voters));
                    if !membership.learners.is_empty() {
                        text.push_str(&format!(", learners {}", ids(&membership.learners)));
                    }
                    ("membership", text)
                }
            };
            json!({
                "index": entry.log_id.index.0,
                "term": entry.log_id.term.0,
                "committed": entry.log_id.index <= page.commit,
                "kind": kind,
                "description": description,
            })
        })
        .collect();
    Ok(axum::Json(json!({
        "first_index": page.first_index.0,
        "last_index": page.last_index.0,
        "commit": page.commit.0,
        "applied": page.applied.0,
        "entries": entries,
    }))
    .into_response())
}
