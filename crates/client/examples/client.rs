//! An application's first steps with a Skiff cluster: write, read, compare-and-set, list,
//! and tell a missing key from a failure.
//!
//! Start a cluster with `skiff demo`, then:
//!
//! ```text
//! cargo run -p skiff-client --example client -- 127.0.0.1:8001 127.0.0.1:8002 127.0.0.1:8003
//! ```

use std::time::Duration;

use skiff_client::{Client, Consistency, Error, WriteOptions};

fn main() -> Result<(), Error> {
    let mut endpoints: Vec<String> = std::env::args().skip(1).collect();
    if endpoints.is_empty() {
        endpoints = ["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"].map(String::from).to_vec();
    }
    // Any nodes of the cluster: a call goes to the one that answered last, and on to the
    // next when a node is down.
    let client = Client::builder().endpoints(&endpoints).timeout(Duration::from_secs(5)).build()?;

    client.put("app/greeting", "hello")?;
    client.put_with("app/limit", "100", WriteOptions { flags: Some(7), ..WriteOptions::default() })?;

    // A consistent read sees every write acknowledged before it; a stale read is answered
    // from the node's own copy, without asking the leader.
    let entry = client.get("app/greeting", Consistency::Consistent)?;
    println!("{} = {:?} (written at index {})", entry.key, String::from_utf8_lossy(&entry.value), entry.modify_index);

    // Compare-and-set: write only if nobody wrote since we read.
    if !client.cas("app/greeting", "hello again", entry.modify_index)? {
        println!("someone else changed app/greeting first");
    }

    for key in client.list_keys("app/", Consistency::Stale)? {
        println!("key {key}");
    }

    match client.get("app/missing", Consistency::Consistent) {
        Ok(entry) => println!("found {entry:?}"),
        Err(Error::NotFound { key }) => println!("{key} does not exist"),
        Err(error) => return Err(error),
    }

    let members = client.members()?;
    println!("leader: {:?}, {} members", members.leader, members.members.len());
    Ok(())
}
