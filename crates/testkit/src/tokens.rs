//! A tokens file for clusters with `[auth]`: a management token, and an application token
//! that may read `shared/` and write `app/` (`docs/security.md` has the file's format).

use std::path::{Path, PathBuf};

/// The management token's secret.
pub const ADMIN: &str = "admin-secret-0123456789";
/// The application token's secret: reads `shared/` (and `app/`, which it writes).
pub const APP: &str = "app-secret-0123456789";
/// The file with both.
pub const TOKENS: &str = r#"
[[token]]
name = "admin"
secret = "admin-secret-0123456789"
management = true

[[token]]
name = "app"
secret = "app-secret-0123456789"
read = ["shared/"]
write = ["app/"]
"#;

/// Writes [`TOKENS`] to `dir/tokens.toml` and returns its path.
pub fn write(dir: &Path) -> PathBuf {
    let path = dir.join("tokens.toml");
    std::fs::write(&path, TOKENS).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    path
}
