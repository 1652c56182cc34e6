//! `/v1/skiff/members`: list, add (as a learner that catches up, then a voter), promote and
//! remove members.

use super::*;

fn member_json(api: &Api, membership: &Membership, id: NodeId) -> Json {
    let address = api.address(membership, id);
    json!({
        "id": id.to_string(),
        "voter": membership.is_voter(id),
        "raft": address.as_ref().map(|address| address.raft.clone()).unwrap_or_else(|| id.to_string()),
        "http": address.as_ref().and_then(|address| address.http.clone()),
        "redis": address.as_ref().and_then(|address| address.redis.clone()),
    })
}

pub(super) async fn members_list(State(api): Shared) -> ApiResult {
    let status = api.status().await?;
    let members: Vec<Json> = status.membership.members().map(|id| member_json(&api, &status.membership, id)).collect();
    Ok(axum::Json(json!({ "leader": status.leader.map(|id| id.to_string()), "members": members })).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AddMember {
    id: String,
    /// Where its peers reach it; without it, its cluster file entry must give it.
    #[serde(default)]
    raft: Option<String>,
    #[serde(default)]
    http: Option<String>,
    #[serde(default)]
    redis: Option<String>,
    #[serde(default)]
    learner: bool,
}

impl AddMember {
    /// The new member's addresses: the request's, else its cluster file entry's.
    fn address(&self, api: &Api, id: NodeId) -> ApiResult<MemberAddress> {
        let Some(raft) = &self.raft else {
            return match api.cluster.node(id) {
                Ok(node) if self.http.is_none() && self.redis.is_none() => Ok(node.address()),
                _ => Err(ApiError::bad_request(format!(
                    "give {id}'s raft address ({{\"id\": \"{id}\", \"raft\": \"host:port\"}}): it is not in the cluster file"
                ))),
            };
        };
        let address = MemberAddress { raft: raft.clone(), http: self.http.clone(), redis: self.redis.clone() };
        // Parse what we would store, so a malformed address is refused here, not found later.
        address.to_string().parse::<MemberAddress>().map_err(ApiError::bad_request)?;
        if address.to_string().len() > Membership::MAX_ADDRESS_BYTES {
            return Err(ApiError::bad_request(format!(
                "addresses longer than {} bytes",
                Membership::MAX_ADDRESS_BYTES
            )));
        }
        Ok(address)
    }
}

/// `GET /v1/skiff/cluster`: what a node joining by address needs to know that its own
/// flags don't say: the cluster's name and security mode, its `[raft]` settings, and the
/// members with their addresses. (Certificates and tokens are never sent: a node of a
/// cluster with `[tls]` or `[auth]` is given its files.)
pub(super) async fn cluster_settings(State(api): Shared) -> ApiResult {
    let status = api.status().await?;
    let members: Vec<Json> = status.membership.members().map(|id| member_json(&api, &status.membership, id)).collect();
    let cluster = &api.cluster;
    Ok(axum::Json(json!({
        "name": cluster.cluster.name,
        "insecure": cluster.cluster.insecure,
        "tls": cluster.tls.is_some(),
        "auth": cluster.auth.is_some(),
        "raft": cluster.raft,
        "leader": status.leader.map(|id| id.to_string()),
        "members": members,
    }))
    .into_response())
}

/// How long `POST /v1/skiff/members` waits for a new learner to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) async fn members_add(State(api): Shared, headers: HeaderMap, body: Body) -> ApiResult {
    let body = read_body(body, &headers, 64 << 10).await?;
    let request: AddMember = serde_json::from_slice(&body).map_err(|error| {
        ApiError::bad_request(format!("the body is not {{\"id\": \"n4\", \"raft\": \"host:port\"}}: {error}"))
    })?;
    let id = parse_id(&request.id)?;
    let address = request.address(&api, id)?;
    let status = api.status().await?;
    if status.role != RoleName::Leader {
        // Only the leader can tell when the learner has caught up.
        return Ok(redirect_to_leader(&api, &status));
    }
    let known = MemberAddress::of(&status.membership, id);
    let retry = status.membership.learners.contains(&id) && known.as_ref().is_none_or(|known| *known == address);
    if status.membership.contains(id) && !retry {
        return Err(ApiError::new(StatusCode::CONFLICT, format!("{id} is already a member")));
    }
    if !retry {
        api.node.add_learner(id, Some(&address)).await.map_err(|error| api.fail(error))?;
    }
    if !request.learner {
        // Thesis §4.2.1: a new server catches up as a non-voting member first, so adding it
        // does not leave the cluster waiting for an empty log to fill. Adding a learner
        // again (a join retried) goes on from here.
        wait_for_catch_up(&api, id).await?;
        api.node.promote(id).await.map_err(|error| api.fail(error))?;
    }
    let status = api.status().await?;
    Ok(axum::Json(member_json(&api, &status.membership, id)).into_response())
}

/// A 307 to the leader's members route, when its address is known.
fn redirect_to_leader(api: &Api, status: &NodeStatus) -> Response {
    let leader_http = status.leader.and_then(|leader| api.http_address(&status.membership, leader));
    let message = "membership changes are made through the leader; retry there";
    let redirect = ApiError { status: StatusCode::TEMPORARY_REDIRECT, message: message.into(), leader: status.leader };
    let mut error = redirect.into_response();
    if let Some(location) =
        leader_http.and_then(|address| HeaderValue::from_str(&format!("http://{address}/v1/skiff/members")).ok())
    {
        error.headers_mut().insert(header::LOCATION, location);
    }
    error
}

/// Waits until learner `id` holds the leader's log as it is now.
async fn wait_for_catch_up(api: &Api, id: NodeId) -> ApiResult<()> {
    let target = api.status().await?.last_log_id.index;
    let deadline = tokio::time::Instant::now() + CATCH_UP_TIMEOUT;
    loop {
        let status = api.status().await?;
        if status.peers.iter().any(|peer| peer.id == id && peer.match_index >= Some(target)) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline || status.role != RoleName::Leader {
            let message = format!("{id} was added as a learner but has not caught up; is it running? Promote it later");
            return Err(ApiError::new(StatusCode::GATEWAY_TIMEOUT, message));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(super) async fn members_promote(
    State(api): Shared,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult {
    let id = parse_id(&id)?;
    let status = api.status().await?;
    if !status.membership.learners.contains(&id) {
        return Err(ApiError::new(StatusCode::CONFLICT, format!("{id} is not a learner")));
    }
    api.node.promote(id).await.map_err(|error| api.fail(error))?;
    let status = api.status().await?;
    Ok(axum::Json(member_json(&api, &status.membership, id)).into_response())
}

pub(super) async fn members_remove(
    State(api): Shared,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult {
    let id = parse_id(&id)?;
    remove(&api, id).await?;
    Ok(StatusCode::OK.into_response())
}
