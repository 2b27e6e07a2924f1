//! Which Jellyfin server is installed, where the system can say: the Debian package's
//! version through `dpkg-query` (found on the `PATH`, so a test can put its own first).

use std::process::Command;

/// The installed package's full version (`10.11.4+deb12`) of `jellyfin-server` (or of the
/// older all-in-one `jellyfin`); `None` when dpkg is not there or neither is installed.
pub fn debian_package() -> Option<(String, String)> {
    for package in ["jellyfin-server", "jellyfin"] {
        let out = Command::new("dpkg-query")
            .args(["-W", "-f=${Status}\t${Version}", package])
            .output()
            .ok()?;
        if !out.status.success() {
            continue;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let (status, version) = text.split_once('\t').unwrap_or(("", text.as_ref()));
        // A package removed but not purged still has a version: only an installed one
        // counts (an older dpkg-query without a status prints none).
        let installed = status.is_empty() || status.ends_with(" installed");
        let version = version.trim();
        if installed && !version.is_empty() {
            return Some((package.to_string(), version.to_string()));
        }
    }
    None
}

/// The upstream part of a Debian version: `10.11.4` of `10.11.4+deb12` (and of an epoch
/// `1:10.11.4+deb12`).
pub fn upstream(debian_version: &str) -> &str {
    let v = debian_version
        .split_once(':')
        .map_or(debian_version, |(_, v)| v);
    v.split(['+', '~']).next().unwrap_or(v)
}

/// The Debian version of `version` built like `installed` (`10.11.3+deb12` for 10.11.3
/// when `10.11.4+deb12` is installed).
pub fn like(installed: &str, version: &str) -> String {
    let epoch = installed.split_once(':').map(|(e, _)| format!("{e}:"));
    let rest = installed.split_once(':').map_or(installed, |(_, v)| v);
    let suffix = rest.find(['+', '~']).map(|i| &rest[i..]).unwrap_or("");
    format!("{}{version}{suffix}", epoch.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_versions() {
        assert_eq!(upstream("10.11.4+deb12"), "10.11.4");
        assert_eq!(upstream("1:10.11.4+ubu2404"), "10.11.4");
        assert_eq!(like("10.11.4+deb12", "10.11.3"), "10.11.3+deb12");
        assert_eq!(like("1:10.11.4+deb12", "10.11.3"), "1:10.11.3+deb12");
        assert_eq!(like("10.11.4", "10.11.3"), "10.11.3");
    }
}
