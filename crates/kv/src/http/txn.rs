//! `PUT /v1/txn`: Consul's transactions over the key-value store. The request is checked
//! whole here (shape, verbs, sizes, session ids, the token's rights on every key) before one
//! log entry is proposed; the state machine applies it all or nothing (`state/txn.rs`).

use super::*;
use crate::state::{TxnEntry, TxnOp, Verb};

/// The most operations in one transaction (Consul allows 64; here the body's size is the
/// real bound, `--max-txn-bytes`).
pub const MAX_TXN_OPS: usize = 4096;

pub(super) async fn txn(
    State(api): Shared,
    access: Option<axum::Extension<Access>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let access = access.map_or(Access::Open, |axum::Extension(access)| access);
    let result = async {
        let body = read_body(body, &headers, api.limits.max_txn_bytes).await.map_err(|error| {
            if error.status == StatusCode::PAYLOAD_TOO_LARGE {
                let message = format!(
                    "the transaction is larger than the limit of {} bytes (--max-txn-bytes)",
                    api.limits.max_txn_bytes
                );
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, message)
            } else {
                error
            }
        })?;
        let ops = parse_txn(&body, &api.limits)?;
        if let Some(refusal) = ops.iter().find_map(|op| refused_by(&access, op)) {
            return Ok(refusal);
        }
        let op = Op::Txn(ops);
        let request = request_id(&headers, &op)?;
        match api.propose_op(op, request).await? {
            Output::Txn(Ok(results)) => {
                let results: Vec<Json> = results.iter().map(|entry| json!({ "KV": txn_entry_json(entry) })).collect();
                Ok(axum::Json(json!({ "Results": results, "Errors": null })).into_response())
            }
            Output::Txn(Err(error)) => {
                let errors = json!([{ "OpIndex": error.op_index, "What": error.what }]);
                Ok((StatusCode::CONFLICT, axum::Json(json!({ "Results": null, "Errors": errors }))).into_response())
            }
            other => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("unexpected output of a transaction: {other:?}"),
            )),
        }
    };
    match result.await {
        Ok(response) => response,
        Err(error) => closing_if_body_unread(&headers, error.into_response()),
    }
}

/// A 403 if `access` may not do `op` on its key: read for reads and checks, write for writes.
fn refused_by(access: &Access, op: &TxnOp) -> Option<Response> {
    let writes =
        !matches!(op.verb, Verb::Get | Verb::GetTree | Verb::CheckIndex | Verb::CheckSession | Verb::CheckNotExists);
    let allowed = if writes { access.can_write(&op.key) } else { access.can_read(&op.key) };
    let key: String = String::from_utf8_lossy(&op.key).chars().take(200).collect();
    let what = if writes { "write" } else { "read" };
    (!allowed).then(|| permission_denied(&format!("the token may not {what} {key:?} (in a transaction)")))
}

/// The request body: a JSON array of `{"KV": {"Verb", "Key", "Value", "Flags", "Index",
/// "Session"}}`, each checked against the limits.
fn parse_txn(body: &[u8], limits: &Limits) -> ApiResult<Vec<TxnOp>> {
    let shape =
        "a transaction is a JSON array of {\"KV\": {\"Verb\": \"set\", \"Key\": \"k\", \"Value\": \"<base64>\"}}";
    let items: Vec<Json> =
        serde_json::from_slice(body).map_err(|error| ApiError::bad_request(format!("{shape}: {error}")))?;
    if items.is_empty() {
        return Err(ApiError::bad_request("the transaction has no operations"));
    }
    if items.len() > MAX_TXN_OPS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the transaction has {} operations; the limit is {MAX_TXN_OPS}", items.len()),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(at, item)| {
            parse_op(item, limits).map_err(|message| ApiError::bad_request(format!("operation {at}: {message}")))
        })
        .collect()
}

fn parse_op(item: &Json, limits: &Limits) -> Result<TxnOp, String> {
    let Some(object) = item.as_object() else { return Err("an operation is a JSON object".into()) };
    let Some(kv) = object.get("KV") else {
        let kinds: Vec<&str> = object.keys().map(String::as_str).collect();
        return Err(format!("only KV operations are supported (got {kinds:?}; Node, Service and Check are not)"));
    };
    if object.len() != 1 {
        return Err("an operation holds one kind: {\"KV\": {...}}".into());
    }
    let Some(fields) = kv.as_object() else { return Err("KV is a JSON object".into()) };
    for name in fields.keys() {
        if !["Verb", "Key", "Value", "Flags", "Index", "Session"].contains(&name.as_str()) {
            return Err(format!("unknown field {name:?} (Verb, Key, Value, Flags, Index, Session)"));
        }
    }
    let text = |name: &str| -> Result<Option<&str>, String> {
        match fields.get(name) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(text)) => Ok(Some(text)),
            Some(_) => Err(format!("{name} is a string")),
        }
    };
    let number = |name: &str| -> Result<u64, String> {
        match fields.get(name) {
            None | Some(Json::Null) => Ok(0),
            Some(value) => value.as_u64().ok_or_else(|| format!("{name} is a number from 0 to 2^64 - 1")),
        }
    };
    let verb = match text("Verb")?.unwrap_or("") {
        "set" => Verb::Set,
        "cas" => Verb::Cas,
        "lock" => Verb::Lock,
        "unlock" => Verb::Unlock,
        "get" => Verb::Get,
        "get-tree" => Verb::GetTree,
        "check-index" => Verb::CheckIndex,
        "check-session" => Verb::CheckSession,
        "check-not-exists" => Verb::CheckNotExists,
        "delete" => Verb::Delete,
        "delete-tree" => Verb::DeleteTree,
        "delete-cas" => Verb::DeleteCas,
        other => {
            let shown: String = other.chars().take(40).collect();
            return Err(format!(
                "unknown Verb {shown:?}: set, cas, lock, unlock, get, get-tree, check-index, check-session, \
                 check-not-exists, delete, delete-tree or delete-cas"
            ));
        }
    };
    let key = text("Key")?.unwrap_or("");
    let is_tree = matches!(verb, Verb::GetTree | Verb::DeleteTree);
    if key.is_empty() && !is_tree {
        return Err("a Key is required".into());
    }
    if key.len() > limits.max_key_bytes {
        return Err(format!("the key is {} bytes; the limit is {} bytes", key.len(), limits.max_key_bytes));
    }
    let value = match text("Value")? {
        None => Bytes::new(),
        Some(encoded) => {
            if encoded.len() / 4 * 3 > limits.max_value_bytes + 3 {
                return Err(format!("the value is larger than the limit of {} bytes", limits.max_value_bytes));
            }
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|error| format!("Value is not base64: {error}"))?;
            if decoded.len() > limits.max_value_bytes {
                return Err(format!("the value is larger than the limit of {} bytes", limits.max_value_bytes));
            }
            Bytes::from(decoded)
        }
    };
    let needs_session = matches!(verb, Verb::Lock | Verb::Unlock | Verb::CheckSession);
    let session = match text("Session")? {
        Some(id) if needs_session => session_id(id, "Session").map_err(|error| error.message)?,
        None if needs_session => return Err("a Session is required for lock, unlock and check-session".into()),
        _ => String::new(),
    };
    Ok(TxnOp {
        verb,
        key: Bytes::copy_from_slice(key.as_bytes()),
        value,
        flags: number("Flags")?,
        index: number("Index")?,
        session,
    })
}

/// A result as Consul answers it: the entry, with `Value` for reads only.
fn txn_entry_json(entry: &TxnEntry) -> Json {
    let value = entry.value.as_ref().map(|value| base64::engine::general_purpose::STANDARD.encode(value));
    let mut json = json!({
        "Key": String::from_utf8_lossy(&entry.key),
        "Value": value,
        "Flags": entry.flags,
        "CreateIndex": entry.create_index,
        "ModifyIndex": entry.modify_index,
        "LockIndex": entry.lock_index,
    });
    if let Some(session) = &entry.session {
        json["Session"] = json!(session);
    }
    json
}
