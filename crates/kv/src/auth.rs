//! Tokens: who may read and write which keys, from the cluster's `[auth]` tokens file
//! (`docs/security.md`).
//!
//! ```toml
//! [[token]]
//! name = "admin"
//! secret = "..."             # at least 16 characters
//! management = true          # everything, admin routes included
//! [[token]]
//! name = "app"
//! secret = "..."
//! read = ["app/", "shared/"] # key prefixes; "" is every key
//! write = ["app/"]           # writing implies reading, as in Consul's ACLs
//! ```
//!
//! A secret is looked up by comparing it with every token's secret in constant time, so how
//! long a lookup takes says nothing about how close a guess was. [`Auth::reload`] (on SIGHUP)
//! swaps in a new file; a file that does not load leaves the old tokens in place.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use serde::Deserialize;
use subtle::{ConditionallySelectable, ConstantTimeEq};
use thiserror::Error;

/// The shortest secret accepted.
pub const MIN_SECRET_BYTES: usize = 16;

/// Why a tokens file was refused. Every message names the file.
#[derive(Debug, Error)]
pub enum AuthError {
    #[error("cannot read tokens file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("tokens file {}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

/// One `[[token]]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// Its name: in logs, and the user name of Redis's `AUTH <name> <secret>`.
    pub name: String,
    secret: String,
    /// Everything: every key, and the admin routes.
    #[serde(default)]
    pub management: bool,
    /// Key prefixes it may read.
    #[serde(default)]
    pub read: Vec<String>,
    /// Key prefixes it may write (and read).
    #[serde(default)]
    pub write: Vec<String>,
}

impl Token {
    /// Whether it may read `key`.
    pub fn can_read(&self, key: &[u8]) -> bool {
        self.management || self.read.iter().chain(&self.write).any(|prefix| key.starts_with(prefix.as_bytes()))
    }

    /// Whether it may write or delete `key`.
    pub fn can_write(&self, key: &[u8]) -> bool {
        self.management || self.write.iter().any(|prefix| key.starts_with(prefix.as_bytes()))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<Token>,
}

/// A loaded tokens file.
#[derive(Debug)]
pub struct Tokens {
    tokens: Vec<Arc<Token>>,
}

impl Tokens {
    /// Reads and checks a tokens file.
    pub fn load(path: &Path) -> Result<Tokens, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read { path: path.into(), source })?;
        Tokens::parse(&text).map_err(|message| AuthError::Invalid { path: path.into(), message })
    }

    /// Parses a tokens file's text; the error says what is wrong and in which token.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let file: TokensFile = toml::from_str(text).map_err(|error| error.message().to_string())?;
        if file.token.is_empty() {
            return Err("no [[token]] is defined, so no client could ever connect".into());
        }
        let mut names = BTreeSet::new();
        let mut secrets = BTreeSet::new();
        for (number, token) in file.token.iter().enumerate() {
            let at = || format!("token {} ({:?})", number + 1, token.name);
            if token.name.is_empty() || token.name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!("{}: a name must not be empty or contain spaces", at()));
            }
            if !names.insert(token.name.as_str()) {
                return Err(format!("{}: the name is used twice", at()));
            }
            if token.secret.len() < MIN_SECRET_BYTES {
                return Err(format!("{}: the secret must be at least {MIN_SECRET_BYTES} characters", at()));
            }
            if !secrets.insert(token.secret.as_str()) {
                return Err(format!("{}: the secret is the same as another token's", at()));
            }
            if !token.management && token.read.is_empty() && token.write.is_empty() {
                return Err(format!("{}: it grants nothing; give it read, write or management = true", at()));
            }
        }
        Ok(Tokens { tokens: file.token.into_iter().map(Arc::new).collect() })
    }

    /// The token whose secret is `secret` (and, if given, whose name is `name`; Redis's
    /// `default` user stands for any). Every secret is compared, in constant time, whatever
    /// matches.
    pub fn find(&self, name: Option<&[u8]>, secret: &[u8]) -> Option<Arc<Token>> {
        let name = name.filter(|name| *name != b"default");
        // Secrets are unique, so at most one matches; no branch on whether one did.
        let mut found = u64::MAX;
        for (index, token) in self.tokens.iter().enumerate() {
            let same = constant_time_equal(secret, token.secret.as_bytes());
            found.conditional_assign(&(index as u64), same);
        }
        let found = usize::try_from(found).ok().and_then(|index| self.tokens.get(index))?;
        match name {
            Some(name) if name != found.name.as_bytes() => None,
            _ => Some(Arc::clone(found)),
        }
    }
}

/// `presented == secret` in a time that depends on `presented`'s length only: unlike
/// `ct_eq` on slices, which answers at once when the lengths differ, it does not tell how
/// long a token's secret is.
fn constant_time_equal(presented: &[u8], secret: &[u8]) -> subtle::Choice {
    let mut same = (presented.len() as u64).ct_eq(&(secret.len() as u64));
    for (at, byte) in presented.iter().enumerate() {
        // Wraps around a shorter secret, so the work is the same whatever its length.
        let other = secret.get(at % secret.len().max(1)).copied().unwrap_or(0);
        same &= byte.ct_eq(&other);
    }
    same
}

/// The tokens of a running node, reloadable.
#[derive(Debug)]
pub struct Auth {
    path: PathBuf,
    tokens: RwLock<Arc<Tokens>>,
    /// Bumped by each reload: a connection compares it with the one it authenticated under.
    generation: AtomicU64,
}

impl Auth {
    /// Loads the tokens file at `path`.
    pub fn load(path: impl Into<PathBuf>) -> Result<Auth, AuthError> {
        let path = path.into();
        let tokens = Tokens::load(&path)?;
        Ok(Auth { path, tokens: RwLock::new(Arc::new(tokens)), generation: AtomicU64::new(0) })
    }

    /// Reads the file again. On an error the tokens in use stay. Returns how many tokens
    /// are now in use.
    pub fn reload(&self) -> Result<usize, AuthError> {
        let tokens = Tokens::load(&self.path)?;
        let count = tokens.tokens.len();
        *self.tokens.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(tokens);
        self.generation.fetch_add(1, Ordering::Release);
        Ok(count)
    }

    /// The tokens in use now. A connection that keeps what it authenticated with compares
    /// this with what it holds ([`Arc::ptr_eq`]) to notice a reload.
    pub fn current(&self) -> Arc<Tokens> {
        Arc::clone(&self.tokens.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The token with this secret (and name, if given), among the tokens in use now.
    pub fn authenticate(&self, name: Option<&[u8]>, secret: &[u8]) -> Option<Arc<Token>> {
        self.current().find(name, secret)
    }

    /// How many reloads happened: cheap to compare on every command.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// `held` as the tokens in use now have it: the same name and secret, with the rights
    /// the file now gives; `None` if it was removed.
    pub fn revalidate(&self, held: &Token) -> Option<Arc<Token>> {
        self.authenticate(Some(held.name.as_bytes()), held.secret.as_bytes())
    }

    /// The tokens file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What a request may do: everything (no `[auth]`), or what its token allows.
#[derive(Clone, Debug)]
pub enum Access {
    /// The cluster has no `[auth]`.
    Open,
    /// A valid token's rights.
    Token(Arc<Token>),
}

impl Access {
    /// Whether it may read `key`.
    pub fn can_read(&self, key: &[u8]) -> bool {
        match self {
            Access::Open => true,
            Access::Token(token) => token.can_read(key),
        }
    }

    /// Whether it may write or delete `key`.
    pub fn can_write(&self, key: &[u8]) -> bool {
        match self {
            Access::Open => true,
            Access::Token(token) => token.can_write(key),
        }
    }

    /// Whether it may do anything, admin routes included.
    pub fn is_management(&self) -> bool {
        match self {
            Access::Open => true,
            Access::Token(token) => token.management,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
        [[token]]
        name = "admin"
        secret = "0123456789abcdef-admin"
        management = true
        [[token]]
        name = "app"
        secret = "0123456789abcdef-app"
        read = ["shared/"]
        write = ["app/"]
    "#;

    #[test]
    fn secrets_find_their_token_and_prefixes_decide() {
        let tokens = Tokens::parse(FILE).unwrap();
        let app = tokens.find(None, b"0123456789abcdef-app").unwrap();
        assert_eq!(app.name, "app");
        assert!(app.can_read(b"app/x") && app.can_write(b"app/x"), "write implies read");
        assert!(app.can_read(b"shared/x") && !app.can_write(b"shared/x"));
        assert!(!app.can_read(b"other") && !app.can_read(b"ap"));
        assert!(tokens.find(Some(b"app"), b"0123456789abcdef-app").is_some());
        assert!(tokens.find(Some(b"admin"), b"0123456789abcdef-app").is_none(), "name and secret must agree");
        assert!(tokens.find(None, b"0123456789abcdef-ap").is_none());
        assert!(tokens.find(None, b"").is_none());
        let admin = tokens.find(None, b"0123456789abcdef-admin").unwrap();
        assert!(admin.can_write(b"anything") && admin.management);
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let cases = [
            ("", "no [[token]]"),
            ("[[token]]\nname = \"a\"\nsecret = \"short\"\nmanagement = true\n", "at least 16"),
            ("[[token]]\nname = \"a b\"\nsecret = \"0123456789abcdef\"\nmanagement = true\n", "spaces"),
            ("[[token]]\nname = \"a\"\nsecret = \"0123456789abcdef\"\n", "grants nothing"),
            ("[[token]]\nname = \"a\"\nsecret = \"0123456789abcdef\"\nadmin = true\n", "unknown field `admin`"),
            (
                "[[token]]\nname = \"a\"\nsecret = \"0123456789abcdef\"\nmanagement = true\n\
                 [[token]]\nname = \"a\"\nsecret = \"0123456789abcdefg\"\nmanagement = true\n",
                "used twice",
            ),
            (
                "[[token]]\nname = \"a\"\nsecret = \"0123456789abcdef\"\nmanagement = true\n\
                 [[token]]\nname = \"b\"\nsecret = \"0123456789abcdef\"\nmanagement = true\n",
                "same as another",
            ),
        ];
        for (text, wanted) in cases {
            let error = Tokens::parse(text).err().unwrap_or_else(|| panic!("{text:?} was accepted"));
            assert!(error.contains(wanted), "{text:?}: {error}");
        }
    }

    #[test]
    fn a_failed_reload_keeps_the_old_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        std::fs::write(&path, FILE).unwrap();
        let auth = Auth::load(&path).unwrap();
        std::fs::write(&path, "not toml [").unwrap();
        let error = auth.reload().unwrap_err().to_string();
        assert!(error.contains("tokens.toml"), "{error}");
        assert!(auth.authenticate(None, b"0123456789abcdef-app").is_some());
        std::fs::write(&path, FILE.replace("-app\"", "-app2\"")).unwrap();
        assert_eq!(auth.reload().unwrap(), 2);
        assert!(auth.authenticate(None, b"0123456789abcdef-app").is_none(), "the old secret is gone");
        assert!(auth.authenticate(None, b"0123456789abcdef-app2").is_some());
    }

    #[test]
    fn secrets_compare_whole_whatever_their_lengths() {
        let equal = |a: &str, b: &str| bool::from(constant_time_equal(a.as_bytes(), b.as_bytes()));
        let secret = "0123456789abcdef";
        assert!(equal(secret, secret));
        for other in ["", "0", "0123456789abcde", "0123456789abcdef0", "0123456789abcdeF", "1123456789abcdef"] {
            assert!(!equal(other, secret), "{other:?}");
        }
        // A presented secret that repeats a shorter one does not match it.
        assert!(!equal("0123456789abcdef0123456789abcdef", secret));
        let tokens = Tokens::parse(FILE).expect("a valid file");
        assert!(tokens.find(None, &[b'x'; 100_000]).is_none());
    }
}
