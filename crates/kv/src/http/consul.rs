//! Consul's status and operator routes: the leader, the peers, the Raft configuration,
//! leadership transfer and peer removal.

use super::*;

pub(super) async fn status_leader(State(api): Shared) -> ApiResult {
    let status = api.status().await?;
    let leader = status.leader.map(|id| api.raft_address(&status.membership, id)).unwrap_or_default();
    Ok(axum::Json(leader).into_response())
}

pub(super) async fn status_peers(State(api): Shared) -> ApiResult {
    let status = api.status().await?;
    let peers: Vec<String> =
        status.membership.voters.iter().map(|&id| api.raft_address(&status.membership, id)).collect();
    Ok(axum::Json(peers).into_response())
}

pub(super) async fn raft_configuration(State(api): Shared) -> ApiResult {
    let status = api.status().await?;
    let servers: Vec<Json> = status
        .membership
        .members()
        .map(|id| {
            json!({
                "ID": id.to_string(),
                "Node": id.to_string(),
                "Address": api.raft_address(&status.membership, id),
                "Leader": status.leader == Some(id),
                "Voter": status.membership.is_voter(id),
                "ProtocolVersion": "3",
            })
        })
        .collect();
    Ok(axum::Json(json!({ "Servers": servers, "Index": status.commit.0 })).into_response())
}

/// How many of the longest election timeouts `transfer-leader` waits for the new leader.
const TRANSFER_WAIT_ELECTION_TIMEOUTS: u32 = 5;

pub(super) async fn transfer_leader(State(api): Shared, uri: Uri) -> ApiResult {
    let query = Query::parse(&uri);
    let status = api.status().await?;
    let target = query.node_id("id")?;
    if let Some(target) = target
        && !status.membership.is_voter(target)
    {
        return Err(ApiError::new(StatusCode::CONFLICT, format!("{target} is not a voter")));
    }
    let others = status.membership.voters.iter().filter(|&&voter| Some(voter) != status.leader).count();
    if target.is_none() && others == 0 {
        return Err(ApiError::new(StatusCode::CONFLICT, "there is no other voter to hand leadership to"));
    }
    let before = api.node.leader().leader;
    api.node.transfer_leader(target).await.map_err(|error| api.fail(error))?;
    // The core abandons a transfer after an election timeout; the target's election and the
    // news of it take less again. Several election timeouts (3 s with the defaults) leave
    // room for a busy machine before reporting a timeout.
    let wait = api.node.options().max_election_timeout() * TRANSFER_WAIT_ELECTION_TIMEOUTS;
    let mut leader = api.node.watch_leader();
    let moved = leader.wait_for(|info| match target {
        Some(target) => info.leader == Some(target),
        None => info.leader.is_some() && info.leader != before,
    });
    if let Ok(Ok(_)) = tokio::time::timeout(wait, moved).await {
        return Ok(axum::Json(json!({ "Success": true })).into_response());
    }
    let whom = target.map_or_else(|| "another voter".to_string(), |target| target.to_string());
    let message = format!("leadership did not move to {whom} within {wait:?}");
    Err(ApiError { status: StatusCode::GATEWAY_TIMEOUT, message, leader: api.node.leader().leader })
}

pub(super) async fn remove_peer(State(api): Shared, uri: Uri) -> ApiResult {
    let query = Query::parse(&uri);
    let id = query.node_id("id")?.ok_or_else(|| ApiError::bad_request("?id=<node id> is required"))?;
    remove(&api, id).await?;
    Ok(StatusCode::OK.into_response())
}

pub(super) async fn remove(api: &Api, id: NodeId) -> ApiResult<()> {
    let status = api.status().await?;
    if !status.membership.contains(id) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("{id} is not a member")));
    }
    api.node.remove(id).await.map_err(|error| api.fail(error))
}
