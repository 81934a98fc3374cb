//! Who may log in: allow and deny lists of openids and unionids, global and per official
//! account (tenant), read from files.
//!
//! Pure and small: [`AccessLists`] is built once (from files by the configuration, or by hand)
//! and asked per request by [`AccessLists::check`], a handful of `HashSet` lookups — one per
//! list in force, none at all when no list is configured. The layer holds the lists behind an
//! `Arc` it can swap at runtime (`WeChatAuthLayer::set_access_lists`).
//!
//! # Rules
//!
//! For a person (openid, unionid if WeChat gave one) of one official account:
//!
//! 1. **deny wins**: listed in the account's denied openids, the global denied unionids or the
//!    account's denied unionids → refused, whatever an allow list says;
//! 2. **an allow list in force admits only listed people**: the lists that can admit are the
//!    global allowed unionids and the account's allowed openids and unionids; as soon as one of
//!    them is configured (its file named, even if the file is empty — fail closed), a person
//!    must be on at least one of them;
//! 3. **no list: everyone** (the behaviour without `[access]`).
//!
//! Openids are per official account by nature, so openid lists exist only per account; unionid
//! lists exist globally and per account. A person without a unionid (no Open Platform binding,
//! or `snsapi_base` without one) is matched by openid only.
//!
//! # File format
//!
//! One id per line; `#` starts a comment (whole line or after the id); blank lines and
//! surrounding whitespace are ignored. An id is 1 to [`MAX_ID_LEN`] characters of
//! `A–Z a–z 0–9 _ -` (WeChat's openids and unionids are 28 such characters); anything else is
//! refused with its file and line ([`ListError`]).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::Hash;
use std::path::{Path, PathBuf};

use crate::identity::Identity;
use crate::ids::{AppId, OpenId, UnionId};

/// Longest id accepted in a list file (WeChat's ids are 28 characters).
pub const MAX_ID_LEN: usize = 128;

/// A list file that could not be used: its path, the 1-based line (0 when the file itself could
/// not be read) and why. Displays as `path:line: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListError {
    /// The file.
    pub path: PathBuf,
    /// The 1-based line, or 0 when the file could not be read.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
        }
    }
}

impl std::error::Error for ListError {}

/// The ids of one list file (openids or unionids).
pub type IdSet<T> = HashSet<T>;

/// Parses the text of a list file (see the module docs for the format). `path` only names the
/// file in errors.
///
/// # Errors
/// The first malformed line, as a [`ListError`].
pub fn parse_ids<T: From<String> + Eq + Hash>(
    text: &str,
    path: &Path,
) -> Result<IdSet<T>, ListError> {
    let mut ids = HashSet::new();
    for (index, line) in text.lines().enumerate() {
        let id = line.split('#').next().unwrap_or_default().trim();
        if id.is_empty() {
            continue;
        }
        if let Some(message) = id_problem(id) {
            return Err(ListError {
                path: path.to_path_buf(),
                line: index + 1,
                message,
            });
        }
        ids.insert(T::from(id.to_owned()));
    }
    Ok(ids)
}

/// Reads and parses a list file.
///
/// # Errors
/// An unreadable file (line 0) or its first malformed line.
pub fn read_ids<T: From<String> + Eq + Hash>(path: &Path) -> Result<IdSet<T>, ListError> {
    let text = std::fs::read_to_string(path).map_err(|e| ListError {
        path: path.to_path_buf(),
        line: 0,
        message: format!("cannot read: {e}"),
    })?;
    parse_ids(&text, path)
}

/// Why `id` is not an id (never echoes the line: it may be anything).
fn id_problem(id: &str) -> Option<String> {
    if id.len() > MAX_ID_LEN {
        return Some(format!("an id is at most {MAX_ID_LEN} characters"));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        let what = if bad.is_whitespace() {
            "one id per line (whitespace inside an id)".to_owned()
        } else {
            format!("{bad:?} cannot be part of an openid or unionid (A-Z a-z 0-9 _ -)")
        };
        return Some(what);
    }
    None
}

/// The lists of one scope (one official account, or the global unionid lists). `None` for an
/// allow list means "not configured"; `Some` of an empty set admits nobody.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessRules {
    /// Only these openids (of this account) may log in, when set.
    pub allow_openids: Option<IdSet<OpenId>>,
    /// These openids (of this account) may not log in.
    pub deny_openids: IdSet<OpenId>,
    /// Only these unionids may log in, when set.
    pub allow_unionids: Option<IdSet<UnionId>>,
    /// These unionids may not log in.
    pub deny_unionids: IdSet<UnionId>,
}

impl AccessRules {
    /// Whether no list is configured at all.
    pub fn is_empty(&self) -> bool {
        self.allow_openids.is_none()
            && self.deny_openids.is_empty()
            && self.allow_unionids.is_none()
            && self.deny_unionids.is_empty()
    }

    fn denies(&self, identity: &Identity) -> bool {
        self.deny_openids.contains(&identity.openid)
            || identity
                .unionid
                .as_ref()
                .is_some_and(|u| self.deny_unionids.contains(u))
    }

    fn has_allow_list(&self) -> bool {
        self.allow_openids.is_some() || self.allow_unionids.is_some()
    }

    fn allows(&self, identity: &Identity) -> bool {
        self.allow_openids
            .as_ref()
            .is_some_and(|ids| ids.contains(&identity.openid))
            || self
                .allow_unionids
                .as_ref()
                .zip(identity.unionid.as_ref())
                .is_some_and(|(ids, u)| ids.contains(u))
    }
}

/// Why [`AccessLists::check`] refused someone (for logs and tests; the person is told only
/// that they may not log in).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// On a deny list.
    Denied,
    /// An allow list is in force and the person is on none of them.
    NotAllowed,
}

impl Refusal {
    /// A short label for log lines (`denied`, `not_allowed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Denied => "denied",
            Refusal::NotAllowed => "not_allowed",
        }
    }
}

/// Every allow and deny list: the global unionid lists and the lists of each official account
/// (see the module docs for the rules). The default has no list (everyone is admitted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLists {
    global: AccessRules,
    accounts: HashMap<AppId, AccessRules>,
    /// Precomputed: no list anywhere (the per-request check is then one branch).
    empty: bool,
}

impl Default for AccessLists {
    fn default() -> Self {
        Self {
            global: AccessRules::default(),
            accounts: HashMap::new(),
            empty: true,
        }
    }
}

impl AccessLists {
    /// The lists: `global` (its openid lists must be empty — openids belong to one account;
    /// this is checked) and the lists of each account, by appid.
    ///
    /// # Errors
    /// `global` carries openid lists.
    pub fn new(
        global: AccessRules,
        accounts: impl IntoIterator<Item = (AppId, AccessRules)>,
    ) -> Result<Self, GlobalOpenIdList> {
        if global.allow_openids.is_some() || !global.deny_openids.is_empty() {
            return Err(GlobalOpenIdList);
        }
        let accounts: HashMap<AppId, AccessRules> = accounts
            .into_iter()
            .filter(|(_, rules)| !rules.is_empty())
            .collect();
        let empty = global.is_empty() && accounts.is_empty();
        Ok(Self {
            global,
            accounts,
            empty,
        })
    }

    /// Whether no list is configured (everyone is admitted).
    pub fn is_empty(&self) -> bool {
        self.empty
    }

    /// May `identity` (a person of the official account `identity.appid`) log in and use a
    /// session? `Ok(())` or why not. At most one lookup per list in force.
    ///
    /// # Errors
    /// The [`Refusal`].
    pub fn check(&self, identity: &Identity) -> Result<(), Refusal> {
        if self.empty {
            return Ok(());
        }
        let account = self.accounts.get(&identity.appid);
        if self.global.denies(identity) || account.is_some_and(|a| a.denies(identity)) {
            return Err(Refusal::Denied);
        }
        let in_force = self.global.has_allow_list() || account.is_some_and(|a| a.has_allow_list());
        if in_force && !self.global.allows(identity) && !account.is_some_and(|a| a.allows(identity))
        {
            return Err(Refusal::NotAllowed);
        }
        Ok(())
    }
}

/// [`AccessLists::new`] was given openid lists in the global scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("openid lists belong to one official account: give them per account, not globally")]
pub struct GlobalOpenIdList;

#[cfg(test)]
mod tests;
