//! `/v1/skiff/members`: list, add (as a learner that catches up, then a voter), promote and
//! remove members.

use super::*;

fn member_json(api: &Api, id: NodeId, voter: bool) -> Json {
    json!({ "id": id.to_string(), "voter": voter, "raft": api.raft_address(id), "http": api.http_address(id) })
}

pub(super) async fn members_list(State(api): Shared) -> ApiResult {
    let status = api.status().await?;
    let members: Vec<Json> =
        status.membership.members().map(|id| member_json(&api, id, status.membership.is_voter(id))).collect();
    Ok(axum::Json(json!({ "leader": status.leader.map(|id| id.to_string()), "members": members })).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AddMember {
    id: String,
    #[serde(default)]
    learner: bool,
}

/// How long `POST /v1/skiff/members` waits for a new learner to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) async fn members_add(State(api): Shared, headers: HeaderMap, body: Body) -> ApiResult {
    let body = read_body(body, &headers, 64 << 10).await?;
    let request: AddMember = serde_json::from_slice(&body)
        .map_err(|error| ApiError::bad_request(format!("the body is not {{\"id\": \"n4\"}}: {error}")))?;
    let id = parse_id(&request.id)?;
    if api.cluster.node(id).is_err() {
        return Err(ApiError::bad_request(format!(
            "{id} is not in the cluster file; every node needs its address there before it can join"
        )));
    }
    let status = api.status().await?;
    if status.membership.contains(id) {
        return Err(ApiError::new(StatusCode::CONFLICT, format!("{id} is already a member")));
    }
    if status.role != RoleName::Leader {
        // Only the leader can tell when the learner has caught up.
        let leader_http = status.leader.and_then(|leader| api.http_address(leader));
        let message = "membership changes are made through the leader; retry there";
        let redirect =
            ApiError { status: StatusCode::TEMPORARY_REDIRECT, message: message.into(), leader: status.leader };
        let mut error = redirect.into_response();
        if let Some(location) =
            leader_http.and_then(|address| HeaderValue::from_str(&format!("http://{address}/v1/skiff/members")).ok())
        {
            error.headers_mut().insert(header::LOCATION, location);
        }
        return Ok(error);
    }
    api.node.add_learner(id).await.map_err(|error| api.fail(error))?;
    if !request.learner {
        // Thesis §4.2.1: a new server catches up as a non-voting member first, so adding it
        // does not leave the cluster waiting for an empty log to fill.
        let target = api.status().await?.last_log_id.index;
        let deadline = tokio::time::Instant::now() + CATCH_UP_TIMEOUT;
        loop {
            let status = api.status().await?;
            let caught_up = status.peers.iter().any(|peer| peer.id == id && peer.match_index >= Some(target));
            if caught_up {
                break;
            }
            if tokio::time::Instant::now() >= deadline || status.role != RoleName::Leader {
                let message =
                    format!("{id} was added as a learner but has not caught up; is it running? Promote it later");
                return Err(ApiError::new(StatusCode::GATEWAY_TIMEOUT, message));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        api.node.promote(id).await.map_err(|error| api.fail(error))?;
    }
    Ok(axum::Json(member_json(&api, id, !request.learner)).into_response())
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
    Ok(axum::Json(member_json(&api, id, true)).into_response())
}

pub(super) async fn members_remove(
    State(api): Shared,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult {
    let id = parse_id(&id)?;
    remove(&api, id).await?;
    Ok(StatusCode::OK.into_response())
}
