//! The `--endpoints` flag: a comma-separated list that becomes a [`skiff_client::Client`]'s
//! endpoints.

use anyhow::{Context, Result, bail};

/// Parses a comma-separated endpoint list into `http://host:port` base URLs.
pub fn parse_endpoints(list: &str) -> Result<Vec<String>> {
    let endpoints: Vec<String> = list
        .split(',')
        .filter(|item| !item.trim().is_empty())
        .map(|item| skiff_client::normalize_endpoint(item).context("--endpoints"))
        .collect::<Result<_>>()?;
    if endpoints.is_empty() {
        bail!("no endpoints given; pass --endpoints host:port[,host:port...]");
    }
    Ok(endpoints)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_lists_are_split_and_normalized() {
        assert_eq!(parse_endpoints("a:1, b:2,").unwrap(), ["http://a:1", "http://b:2"]);
        assert!(parse_endpoints(" , ").is_err());
        assert!(parse_endpoints("a:1,https://b:2").is_err());
    }
}
