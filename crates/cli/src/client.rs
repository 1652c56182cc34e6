//! The client's flags: `--endpoints`, a comma-separated list that becomes a
//! [`skiff_client::Client`]'s endpoints, and `--cacert`, `--cert`/`--key` and `--token`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use skiff_client::ClientBuilder;
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

/// How a client reaches a cluster that has `[tls]` or `[auth]` (docs/security.md).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct SecurityArgs {
    /// The cluster's CA certificate (PEM): the nodes are reached over https:// and their
    /// certificates must chain to it.
    #[arg(long, global = true, env = "SKIFF_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// A client certificate (PEM), for nodes that require one (verify_clients).
    #[arg(
        id = "tls_cert",
        long = "cert",
        global = true,
        env = "SKIFF_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    // Not the id `key`: the commands' own `key` arguments have it.
    #[arg(id = "tls_key", long = "key", global = true, env = "SKIFF_KEY", value_name = "FILE", requires = "tls_cert")]
    pub key: Option<PathBuf>,
    /// A token's secret, sent with every request (the cluster's [auth] tokens file).
    #[arg(long, global = true, env = "SKIFF_TOKEN", value_name = "SECRET", hide_env_values = true)]
    pub token: Option<String>,
}

/// What [`SecurityArgs`] name, read from their files.
#[derive(Clone, Debug, Default)]
pub struct Security {
    /// The CA certificate(s), PEM.
    pub ca_pem: Option<Vec<u8>>,
    /// A client certificate and key, PEM.
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// The token's secret.
    pub token: Option<String>,
}

impl SecurityArgs {
    /// Reads the files the flags name.
    pub fn load(&self) -> Result<Security> {
        let read = |flag: &str, path: &PathBuf| {
            std::fs::read(path).with_context(|| format!("--{flag} {}: cannot read it", path.display()))
        };
        let ca_pem = self.cacert.as_ref().map(|path| read("cacert", path)).transpose()?;
        let identity_pem = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some((read("cert", cert)?, read("key", key)?)),
            _ => None,
        };
        Ok(Security { ca_pem, identity_pem, token: self.token.clone() })
    }
}

impl Security {
    /// The TLS settings of a plain `ureq` agent (`skiff check`'s probes, `snapshot save`):
    /// trust `--cacert`, present `--cert`/`--key`.
    pub fn tls_config(&self) -> Result<TlsConfig> {
        let mut tls = TlsConfig::builder();
        if let Some(ca) = &self.ca_pem {
            let roots = certificates(ca);
            if roots.is_empty() {
                bail!("--cacert holds no PEM certificate");
            }
            tls = tls.root_certs(RootCerts::new_with_certs(&roots));
        }
        if let Some((certificate, key)) = &self.identity_pem {
            let chain = certificates(certificate);
            if chain.is_empty() {
                bail!("--cert holds no PEM certificate");
            }
            let key = PrivateKey::from_pem(key).map_err(|_| anyhow::anyhow!("--key holds no PEM private key"))?;
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        Ok(tls.build())
    }

    /// `builder` with this CA, client certificate and token.
    pub fn apply(&self, mut builder: ClientBuilder) -> ClientBuilder {
        if let Some(ca) = &self.ca_pem {
            builder = builder.ca_pem(ca.clone());
        }
        if let Some((cert, key)) = &self.identity_pem {
            builder = builder.client_certificate_pem(cert.clone(), key.clone());
        }
        if let Some(token) = &self.token {
            builder = builder.token(token.clone());
        }
        builder
    }

    /// The scheme of endpoints written as `host:port`.
    pub fn scheme(&self) -> &'static str {
        if self.ca_pem.is_some() { "https" } else { "http" }
    }
}

/// Parses a comma-separated endpoint list into `http://host:port` base URLs (`https://`
/// for `host:port` when `security` has a CA).
pub fn parse_endpoints(list: &str, security: &Security) -> Result<Vec<String>> {
    let endpoints: Vec<String> = list
        .split(',')
        .filter(|item| !item.trim().is_empty())
        .map(|item| skiff_client::normalize_endpoint_as(item, security.scheme()).context("--endpoints"))
        .collect::<Result<_>>()?;
    if endpoints.is_empty() {
        bail!("no endpoints given; pass --endpoints host:port[,host:port...]");
    }
    Ok(endpoints)
}

/// The certificates of a PEM file.
fn certificates(pem: &[u8]) -> Vec<Certificate<'static>> {
    ureq::tls::parse_pem(pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(certificate)) => Some(certificate),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_lists_are_split_and_normalized() {
        let plain = Security::default();
        assert_eq!(parse_endpoints("a:1, b:2,", &plain).unwrap(), ["http://a:1", "http://b:2"]);
        assert!(parse_endpoints(" , ", &plain).is_err());
        assert!(parse_endpoints("a:1,ftp://b:2", &plain).is_err());
        let tls = Security { ca_pem: Some(Vec::new()), ..Security::default() };
        assert_eq!(parse_endpoints("a:1,http://b:2", &tls).unwrap(), ["https://a:1", "http://b:2"]);
    }
}
