//! `skiff snapshot save | inspect | restore` and `skiff recover` (docs/operations.md,
//! "Backup and restore" and "Losing a quorum").
//!
//! A backup file is untrusted input: everything read from one goes through
//! [`BackupReader`], which bounds every length before it allocates and fails (never
//! panics) on a damaged or truncated file.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;
use skiff::config::{ClusterConfig, parse_node_id};
use skiff::wire::ClusterId;
use skiff::{Membership, NodeId};
use skiff_storage::{BackupHeader, BackupReader, DiskOptions, DiskStorage};

use crate::client::Security;
use crate::commands::Format;

/// The state machine whose snapshots `skiff` restores (what `GET /v1/snapshot` writes in a
/// backup's header).
const STATE_MACHINE: &str = "skiff-kv";
/// The longest error body read from a node.
const MAX_ERROR_BODY: u64 = 64 << 10;

/// `skiff snapshot save FILE`: what to save and from where.
pub struct SaveOptions {
    pub file: PathBuf,
    /// The nodes to ask, in order, until one answers (`http://host:port` or `host:port`).
    pub endpoints: Vec<String>,
    /// How long to wait for a node to start answering (the read barrier included).
    pub timeout: Duration,
    pub security: Security,
}

/// `skiff snapshot save`: streams `GET /v1/snapshot` into `FILE.tmp`, fsyncs it, checks it
/// whole, then renames it over `FILE` and fsyncs the directory: `FILE` is either the old
/// file or a complete, verified backup.
pub fn save(options: SaveOptions, format: Format) -> Result<()> {
    let agent = agent(&options.security, options.timeout)?;
    let tmp = tmp_path(&options.file)?;
    let mut failures = Vec::new();
    for endpoint in &options.endpoints {
        let url = format!("{}/v1/snapshot", base_url(endpoint, &options.security));
        match download(&agent, &url, options.security.token.as_deref(), &tmp) {
            Ok(Download::Saved) => return finish_save(&tmp, &options.file, &url, format),
            Ok(Download::Refused(reason)) => {
                let _ = fs::remove_file(&tmp);
                bail!("{url}: {reason}");
            }
            Err(error) => {
                let _ = fs::remove_file(&tmp);
                failures.push(format!("{url}: {error:#}"));
            }
        }
    }
    bail!("no node answered:\n  {}", failures.join("\n  "))
}

enum Download {
    Saved,
    /// The node answered with an error that another node would repeat (a refused token).
    Refused(String),
}

/// Streams the answer of `url` into `tmp` and fsyncs it.
fn download(agent: &ureq::Agent, url: &str, token: Option<&str>, tmp: &Path) -> Result<Download> {
    let mut request = ureq::http::Request::builder().method("GET").uri(url);
    if let Some(token) = token {
        request = request.header("X-Consul-Token", token);
    }
    let mut response = agent.run(request.body(())?)?;
    let status = response.status().as_u16();
    if status != 200 {
        let body = response.body_mut().with_config().limit(MAX_ERROR_BODY).read_to_vec().unwrap_or_default();
        let reason = format!("HTTP {status}: {}", String::from_utf8_lossy(&body).trim());
        if status == 403 || status == 401 {
            return Ok(Download::Refused(format!("{reason} (a backup needs a management token: --token)")));
        }
        bail!(reason);
    }
    let file = File::create(tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut body = response.body_mut().with_config().limit(u64::MAX).reader();
    io::copy(&mut body, &mut out).with_context(|| format!("while receiving the backup into {}", tmp.display()))?;
    let file = out.into_inner().map_err(|error| error.into_error())?;
    file.sync_all().with_context(|| format!("cannot fsync {}", tmp.display()))?;
    Ok(Download::Saved)
}

/// Checks the downloaded backup whole, then puts it in place.
fn finish_save(tmp: &Path, file: &Path, url: &str, format: Format) -> Result<()> {
    let summary = match summarize(tmp) {
        Ok(summary) => summary,
        Err(error) => {
            let _ = fs::remove_file(tmp);
            return Err(error.context(format!("the backup {url} sent does not verify; nothing was saved")));
        }
    };
    fs::rename(tmp, file).with_context(|| format!("cannot rename {} to {}", tmp.display(), file.display()))?;
    let dir = file.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir).and_then(|dir| dir.sync_all()).with_context(|| format!("cannot fsync {}", dir.display()))?;
    match format {
        Format::Json => println!("{}", summary.json(file)),
        Format::Human => {
            let header = &summary.header;
            println!(
                "saved {}: index {}, term {}, cluster {}, {} bytes{}",
                file.display(),
                header.last_log_id.index,
                header.last_log_id.term,
                header.cluster,
                summary.file_bytes,
                summary.keys.map(|keys| format!(", {keys} keys")).unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// `FILE.tmp`, beside `FILE`.
fn tmp_path(file: &Path) -> Result<PathBuf> {
    let name = file.file_name().ok_or_else(|| anyhow!("{} is not a file name", file.display()))?;
    let mut tmp = name.to_os_string();
    tmp.push(".tmp");
    Ok(file.with_file_name(tmp))
}

/// `host:port` as a URL (https:// when a CA is given); a URL as it is.
fn base_url(endpoint: &str, security: &Security) -> String {
    let endpoint = endpoint.trim().trim_end_matches('/');
    if endpoint.contains("://") {
        return endpoint.to_string();
    }
    let scheme = if security.ca_pem.is_some() { "https" } else { "http" };
    format!("{scheme}://{endpoint}")
}

/// An HTTP agent with the client's TLS settings, no redirects, and `timeout` for the
/// connection and the answer's headers (not for the body: a large backup takes long).
fn agent(security: &Security, timeout: Duration) -> Result<ureq::Agent> {
    let config = ureq::Agent::config_builder()
        .tls_config(security.tls_config()?)
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_connect(Some(timeout))
        .timeout_recv_response(Some(timeout))
        .user_agent(concat!("skiff/", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(config.into())
}

/// What `inspect` reports about a backup that verified.
struct Summary {
    header: BackupHeader,
    file_bytes: u64,
    data_bytes: u64,
    /// The number of keys, read from the KV snapshot's head (`None` for another state
    /// machine's data).
    keys: Option<u64>,
}

impl Summary {
    fn json(&self, file: &Path) -> serde_json::Value {
        let header = &self.header;
        json!({
            "file": file.display().to_string(),
            "bytes": self.file_bytes,
            "data_bytes": self.data_bytes,
            "index": header.last_log_id.index.0,
            "term": header.last_log_id.term.0,
            "cluster": header.cluster,
            "node": header.node.to_string(),
            "created_unix_ms": header.created_unix_ms,
            "state_machine": header.state_machine,
            "keys": self.keys,
            "voters": header.membership.voters.iter().map(NodeId::to_string).collect::<Vec<_>>(),
            "learners": header.membership.learners.iter().map(NodeId::to_string).collect::<Vec<_>>(),
            "addresses": header.membership.addresses.iter().map(|(id, address)| (id.to_string(), address.clone())).collect::<std::collections::BTreeMap<_, _>>(),
            "checksum": "ok",
        })
    }
}

/// Opens the backup `path` and checks it whole (header, every frame, the data's checksum),
/// counting the keys of a KV snapshot on the way.
fn summarize(path: &Path) -> Result<Summary> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let file_bytes = file.metadata().map(|metadata| metadata.len()).unwrap_or(0);
    let name = path.display().to_string();
    let mut reader = BackupReader::open(BufReader::with_capacity(1 << 20, file), &name)?;
    let keys = if reader.header().state_machine == STATE_MACHINE {
        skiff_kv::state::snapshot_key_count(&mut reader).ok()
    } else {
        None
    };
    let data_bytes = reader.verify_to_end().with_context(|| format!("{name} does not verify"))?;
    Ok(Summary { header: reader.header().clone(), file_bytes, data_bytes, keys })
}

/// `skiff snapshot inspect FILE`.
pub fn inspect(file: &Path, format: Format) -> Result<()> {
    let summary = summarize(file)?;
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&summary.json(file))?);
        return Ok(());
    }
    let header = &summary.header;
    println!("file        {} ({} bytes)", file.display(), summary.file_bytes);
    println!("cluster     {}", header.cluster);
    println!("index       {}", header.last_log_id.index);
    println!("term        {}", header.last_log_id.term);
    println!("taken by    {} at {}", header.node, utc(header.created_unix_ms));
    println!("members     {}", members(&header.membership));
    for (id, address) in &header.membership.addresses {
        println!("            {id}: {address}");
    }
    let keys = summary.keys.map(|keys| format!(", {keys} keys")).unwrap_or_default();
    println!("data        {} bytes of {} snapshot{keys}", summary.data_bytes, header.state_machine);
    println!("checksum    ok");
    Ok(())
}

/// `n1, n2, n3 (voters); n4 (learner)`.
fn members(membership: &Membership) -> String {
    let list =
        |ids: &std::collections::BTreeSet<NodeId>| ids.iter().map(NodeId::to_string).collect::<Vec<_>>().join(", ");
    let mut text = format!("{} (voters)", list(&membership.voters));
    if !membership.learners.is_empty() {
        text.push_str(&format!("; {} (learners)", list(&membership.learners)));
    }
    text
}

/// `2024-05-01 12:34:56 UTC` for milliseconds since the Unix epoch.
fn utc(unix_ms: u64) -> String {
    let seconds = unix_ms / 1000;
    let (days, second_of_day) = ((seconds / 86_400) as i64, seconds % 86_400);
    // Civil date from days since 1970-01-01 (the proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let (hour, minute, second) = (second_of_day / 3600, second_of_day % 3600 / 60, second_of_day % 60);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02} UTC")
}

/// What `restore` and `recover` take from the command line.
pub struct NodeDirectory {
    pub config: PathBuf,
    pub id: String,
    pub data_dir: PathBuf,
}

impl NodeDirectory {
    /// The cluster file, the node's id in it, and the disk options a node would open its
    /// directory with.
    fn load(&self) -> Result<(ClusterConfig, NodeId, DiskOptions)> {
        let cluster = ClusterConfig::load(&self.config)?;
        let id = parse_node_id(self.id.trim())?;
        cluster.node(id)?;
        let options = DiskOptions::new(id, cluster.cluster.name.clone(), cluster.voters());
        Ok((cluster, id, options))
    }
}

/// `skiff snapshot restore FILE --config F --id ID --data-dir DIR`: seeds node ID's new
/// data directory from the backup, under the cluster file's membership. Run once per
/// initial member; the one with the lowest id makes the new cluster's id, the others adopt
/// it from it when they first connect (as at a first start).
pub fn restore(file: &Path, node: &NodeDirectory, format: Format) -> Result<()> {
    let (cluster, id, mut options) = node.load()?;
    let voters = options.initial_membership.clone();
    if !voters.is_voter(id) {
        bail!(
            "{id} is listed with `join = true` in {}: restore the initial members only (those without it), \
             start them, then add {id} with `skiff members add {id}`",
            node.config.display()
        );
    }
    let makes_cluster_id = voters.voters.first() == Some(&id);
    if makes_cluster_id {
        options.cluster_id = Some(ClusterId::random()?.to_string());
    }
    let input = File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let name = file.display().to_string();
    let mut reader = BackupReader::open(BufReader::with_capacity(1 << 20, input), &name)?;
    let header = reader.header().clone();
    if header.state_machine != STATE_MACHINE {
        bail!("{name} holds a {:?} snapshot, not a {STATE_MACHINE} one: skiff cannot restore it", header.state_machine);
    }
    DiskStorage::seed(&node.data_dir, &options, header.last_log_id, &mut reader)
        .with_context(|| format!("cannot restore {name} into {}", node.data_dir.display()))?;
    let members = members(&voters);
    let cluster_id = options.cluster_id.clone();
    match format {
        Format::Json => println!(
            "{}",
            json!({
                "data_dir": node.data_dir.display().to_string(),
                "id": id.to_string(),
                "cluster": cluster.cluster.name,
                "cluster_id": cluster_id,
                "index": header.last_log_id.index.0,
                "term": header.last_log_id.term.0,
                "data_bytes": reader.data_bytes(),
            })
        ),
        Format::Human => {
            println!(
                "restored {name} (index {}, term {}, cluster {}) into {} for {id} of cluster {}, members {members}",
                header.last_log_id.index,
                header.last_log_id.term,
                header.cluster,
                node.data_dir.display(),
                cluster.cluster.name,
            );
            match cluster_id {
                Some(cluster_id) => println!("new cluster id {cluster_id}; the other members adopt it from {id}"),
                None => println!(
                    "the cluster id comes from {} (restore it too)",
                    voters.voters.first().map_or_else(String::new, NodeId::to_string)
                ),
            }
            println!(
                "Restore every member the same way, then start each with `skiff serve --config ... --id ... --data-dir ...`."
            );
        }
    }
    Ok(())
}

/// `skiff recover --data-dir DIR --id ID --config F [--members ID]`: makes a stopped node's
/// directory a one-member cluster with a new cluster id (see [`DiskStorage::force_new_cluster`]).
pub fn recover(node: &NodeDirectory, members: &[String], format: Format) -> Result<()> {
    let (cluster, id, options) = node.load()?;
    for member in members {
        let member = parse_node_id(member.trim())?;
        if member != id {
            bail!(
                "--members {member}: recover makes a cluster of this one node ({id}); start it, then add the \
                 others back as new nodes with `skiff members add`"
            );
        }
    }
    let mut membership = Membership::with_voters([id]);
    if let Some(address) = cluster.voters().addresses.get(&id) {
        membership.addresses.insert(id, address.clone());
    }
    let cluster_id = ClusterId::random()?.to_string();
    let forced = DiskStorage::force_new_cluster(&node.data_dir, &options, membership, &cluster_id)
        .with_context(|| format!("cannot recover {}", node.data_dir.display()))?;
    let uncommitted = forced.last_log_id.index.0.saturating_sub(forced.commit.0);
    match format {
        Format::Json => println!(
            "{}",
            json!({
                "data_dir": node.data_dir.display().to_string(),
                "id": id.to_string(),
                "cluster_id": forced.cluster_id,
                "old_cluster_id": forced.old_cluster_id,
                "commit": forced.commit.0,
                "last_index": forced.last_log_id.index.0,
                "membership_index": forced.membership_entry.index.0,
                "term": forced.membership_entry.term.0,
            })
        ),
        Format::Human => {
            println!(
                "{} is now the data directory of a one-member cluster: {id} alone, new cluster id {}.",
                node.data_dir.display(),
                forced.cluster_id
            );
            println!(
                "Its log ends at index {} (term {}); {uncommitted} entries after the last index known committed ({}) \
                 are kept and will be committed.",
                forced.last_log_id.index, forced.last_log_id.term, forced.commit
            );
            println!(
                "Next: start it with `skiff serve`, then add nodes with empty data directories with `skiff members add`. \
                 Never start the old members' data directories again: they belong to the old cluster."
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000_123), "2023-11-14 22:13:20 UTC");
    }
}
