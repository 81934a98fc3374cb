//! `[access]`: who may log in — allow and deny lists of openids and unionids, read from files
//! ([`crate::access`] has the rules and the file format).
//!
//! ```toml
//! [access]
//! allow_unionids_file = "staff-unionids.txt"      # global: unionids span the accounts
//! deny_unionids_file = "banned-unionids.txt"
//!
//! [access.tenants.wx1234567890abcdef]              # one official account, by appid
//! allow_openids_file = "wx1234567890abcdef-staff.txt"
//! deny_openids_file = "wx1234567890abcdef-banned.txt"
//! allow_unionids_file = "…"
//! deny_unionids_file = "…"
//! ```
//!
//! Relative paths are relative to the configuration file's directory. The files are read (and
//! every bad line reported with `file:line`) when the configuration is checked, and read again
//! by [`AccessConfig::lists`] when the layer is built (and by a reload).

use std::collections::BTreeMap;
use std::hash::Hash;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigProblem, Problems};
use crate::access::{AccessLists, AccessRules, IdSet, read_ids};
use crate::ids::AppId;
use crate::layer::tenant::looks_like_appid;

/// `[access]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// Only the unionids in this file may log in (on every account), when set.
    #[serde(default)]
    pub allow_unionids_file: Option<PathBuf>,
    /// The unionids in this file may not log in (on any account).
    #[serde(default)]
    pub deny_unionids_file: Option<PathBuf>,
    /// The lists of one official account, by appid (`[access.tenants.<appid>]`).
    #[serde(default)]
    pub tenants: BTreeMap<String, AccountAccessConfig>,
}

/// `[access.tenants.<appid>]`
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountAccessConfig {
    /// Only these openids of the account may log in, when set.
    #[serde(default)]
    pub allow_openids_file: Option<PathBuf>,
    /// These openids of the account may not log in.
    #[serde(default)]
    pub deny_openids_file: Option<PathBuf>,
    /// Only these unionids may log in on this account, when set.
    #[serde(default)]
    pub allow_unionids_file: Option<PathBuf>,
    /// These unionids may not log in on this account.
    #[serde(default)]
    pub deny_unionids_file: Option<PathBuf>,
}

impl AccessConfig {
    /// Makes every relative file path relative to `base` (the configuration's directory).
    pub(super) fn resolve_paths(&mut self, base: &Path) {
        let paths = [&mut self.allow_unionids_file, &mut self.deny_unionids_file]
            .into_iter()
            .chain(self.tenants.values_mut().flat_map(|a| {
                [
                    &mut a.allow_openids_file,
                    &mut a.deny_openids_file,
                    &mut a.allow_unionids_file,
                    &mut a.deny_unionids_file,
                ]
            }));
        for path in paths.flatten() {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }

    /// Reads every list file into the layer's [`AccessLists`].
    ///
    /// # Errors
    /// The first unreadable file or bad line, with its key and `file:line`.
    pub fn lists(&self) -> Result<AccessLists, ConfigProblem> {
        let mut problems = Problems::default();
        let lists = self.read(&mut problems);
        match problems.0.into_iter().next() {
            Some(problem) => Err(problem),
            None => Ok(lists),
        }
    }

    /// Reads every file, reporting each problem; the lists of a bad file are left empty.
    fn read(&self, problems: &mut Problems) -> AccessLists {
        let global = AccessRules {
            allow_unionids: one(
                "access.allow_unionids_file",
                &self.allow_unionids_file,
                problems,
            ),
            deny_unionids: one(
                "access.deny_unionids_file",
                &self.deny_unionids_file,
                problems,
            )
            .unwrap_or_default(),
            ..AccessRules::default()
        };
        let accounts: Vec<(AppId, AccessRules)> = self
            .tenants
            .iter()
            .map(|(appid, files)| {
                let key = |name: &str| format!("access.tenants.{appid}.{name}");
                let rules = AccessRules {
                    allow_openids: one(
                        &key("allow_openids_file"),
                        &files.allow_openids_file,
                        problems,
                    ),
                    deny_openids: one(
                        &key("deny_openids_file"),
                        &files.deny_openids_file,
                        problems,
                    )
                    .unwrap_or_default(),
                    allow_unionids: one(
                        &key("allow_unionids_file"),
                        &files.allow_unionids_file,
                        problems,
                    ),
                    deny_unionids: one(
                        &key("deny_unionids_file"),
                        &files.deny_unionids_file,
                        problems,
                    )
                    .unwrap_or_default(),
                };
                (AppId::new(appid.as_str()), rules)
            })
            .collect();
        // The global rules hold unionid lists only, so `new` cannot refuse them.
        AccessLists::new(global, accounts).unwrap_or_default()
    }

    /// The cross-field rules, and every list file read once. `accounts` are the appids the
    /// configuration serves when it names them all (`None`: any account may come, dynamic
    /// tenants).
    pub(super) fn check(&self, accounts: Option<&[&str]>, problems: &mut Problems) {
        for appid in self.tenants.keys() {
            let key = format!("access.tenants.{appid}");
            if !looks_like_appid(appid) {
                problems.bad(&key, "is not an appid (wx and 16 hexadecimal digits)");
            } else if accounts.is_some_and(|known| !known.contains(&appid.as_str())) {
                problems.bad(&key, "names no official account of this configuration");
            }
        }
        self.read(problems);
    }
}

/// One list file at `key`: `None` when not configured (or unusable, reported).
fn one<T: From<String> + Eq + Hash>(
    key: &str,
    file: &Option<PathBuf>,
    problems: &mut Problems,
) -> Option<IdSet<T>> {
    let path = file.as_ref()?;
    match read_ids(path) {
        Ok(ids) => Some(ids),
        Err(e) => {
            problems.bad(key, e.to_string());
            None
        }
    }
}
