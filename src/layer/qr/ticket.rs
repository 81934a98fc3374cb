//! The ticket of one desktop QR login: what it records and the pure state machine with its
//! lifetimes (no I/O; the routes read a ticket, ask here, and write it back with the store's
//! compare-and-set).
//!
//! ```text
//! pending ──scan (first phone)──► scanned ──phone's OAuth callback──► authorized
//!    │                               │                                  │
//!    │ scan_ttl                      │ confirm_ttl                      ├─确认登录─► approved ──finish (desktop, atomic take)──► gone
//!    ▼                               ▼                                  └─取消────► rejected
//! expired ◄───────────── every state, also at created + absolute_ttl ─────────────
//! ```
//!
//! Deadlines: `pending` ends `scan_ttl` after creation; `scanned` and `authorized` end
//! `confirm_ttl` after the scan; `approved` ends `redeem_ttl` after the approval; nothing
//! outlives `absolute_ttl` after creation. Times are Unix milliseconds, so instances sharing a
//! store agree within their clock skew.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::QrSettings;
use crate::{identity::Identity, session::ReturnPath};

/// The wall clock in Unix milliseconds.
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One desktop login waiting for a phone. Serialized (JSON) into the ticket store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Ticket {
    /// The official account (authorizer appid) the desktop asked on.
    #[serde(rename = "t")]
    pub(super) tenant: String,
    /// Where the desktop goes once logged in.
    #[serde(rename = "r")]
    pub(super) return_path: ReturnPath,
    /// SHA-256 (hex) of the desktop's secret cookie.
    #[serde(rename = "d")]
    pub(super) desktop: String,
    /// The desktop's address, as the proxy saw it (trusted forwarding only).
    #[serde(rename = "i", default)]
    pub(super) desktop_ip: Option<String>,
    /// "Chrome · Windows": what the phone is shown.
    #[serde(rename = "u")]
    pub(super) desktop_agent: String,
    /// Creation time, Unix ms.
    #[serde(rename = "c")]
    pub(super) created_ms: u64,
    #[serde(rename = "s")]
    pub(super) state: State,
}

/// Where a ticket is in its life. The phone is named by the SHA-256 (hex) of its own cookie:
/// the first phone to scan owns the ticket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub(super) enum State {
    Pending,
    Scanned {
        phone: String,
        /// The phone's address at the scan (for the different-network warning).
        #[serde(default)]
        phone_ip: Option<String>,
        at: u64,
    },
    Authorized {
        phone: String,
        #[serde(default)]
        phone_ip: Option<String>,
        at: u64,
        identity: Identity,
    },
    Approved {
        at: u64,
        identity: Identity,
    },
    Rejected {
        at: u64,
    },
}

/// What the desktop may learn: never who scanned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Status {
    Pending,
    Scanned,
    Approved,
    Rejected,
    Expired,
}

impl Status {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Scanned => "scanned",
            Status::Approved => "approved",
            Status::Rejected => "rejected",
            Status::Expired => "expired",
        }
    }

    pub(super) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Status::Pending,
            "scanned" => Status::Scanned,
            "approved" => Status::Approved,
            "rejected" => Status::Rejected,
            "expired" => Status::Expired,
            _ => return None,
        })
    }

    /// Whether nothing can change any more.
    pub(super) fn is_final(self) -> bool {
        matches!(self, Status::Rejected | Status::Expired)
    }
}

/// Why a step was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Past its deadline.
    Expired,
    /// Another phone owns it, or it is past the step (approved, rejected).
    Used,
}

impl Ticket {
    /// The deadline (Unix ms) of the current state, capped by the absolute lifetime.
    pub(super) fn deadline(&self, settings: &QrSettings) -> u64 {
        let phase = match &self.state {
            State::Pending => self.created_ms.saturating_add(ms(settings.scan_ttl)),
            State::Scanned { at, .. } | State::Authorized { at, .. } => {
                // The scan time: `Authorized` keeps the scan's deadline.
                at.saturating_add(ms(settings.confirm_ttl))
            }
            State::Approved { at, .. } => at.saturating_add(ms(settings.redeem_ttl)),
            State::Rejected { .. } => u64::MAX,
        };
        phase.min(self.created_ms.saturating_add(ms(settings.absolute_ttl)))
    }

    /// Whether it is past its deadline at `now`.
    pub(super) fn is_expired(&self, settings: &QrSettings, now: u64) -> bool {
        now >= self.deadline(settings)
    }

    /// What a status answer says at `now` (never the identity).
    pub(super) fn status(&self, settings: &QrSettings, now: u64) -> Status {
        if self.is_expired(settings, now) {
            return Status::Expired;
        }
        match self.state {
            State::Pending => Status::Pending,
            State::Scanned { .. } | State::Authorized { .. } => Status::Scanned,
            State::Approved { .. } => Status::Approved,
            State::Rejected { .. } => Status::Rejected,
        }
    }

    /// Seconds left in the current state (0 when expired).
    pub(super) fn expires_in(&self, settings: &QrSettings, now: u64) -> u64 {
        self.deadline(settings).saturating_sub(now).div_ceil(1000)
    }

    fn live(&self, settings: &QrSettings, now: u64) -> Result<(), Refusal> {
        if self.is_expired(settings, now) {
            Err(Refusal::Expired)
        } else {
            Ok(())
        }
    }

    /// The phone `phone` opened the QR link: the first phone owns the ticket; the same phone
    /// may open it again (reload) until it decided; any other phone is refused.
    pub(super) fn scan(
        &self,
        phone: &str,
        phone_ip: Option<String>,
        settings: &QrSettings,
        now: u64,
    ) -> Result<Ticket, Refusal> {
        self.live(settings, now)?;
        match &self.state {
            State::Pending => Ok(Ticket {
                state: State::Scanned {
                    phone: phone.to_owned(),
                    phone_ip,
                    at: now,
                },
                ..self.clone()
            }),
            State::Scanned { phone: owner, .. } | State::Authorized { phone: owner, .. }
                if crate::secret::constant_time_eq(owner.as_bytes(), phone.as_bytes()) =>
            {
                Ok(self.clone())
            }
            _ => Err(Refusal::Used),
        }
    }

    /// The owning phone's OAuth callback delivered `identity`.
    pub(super) fn authorize(
        &self,
        phone: &str,
        identity: Identity,
        settings: &QrSettings,
        now: u64,
    ) -> Result<Ticket, Refusal> {
        self.live(settings, now)?;
        match &self.state {
            State::Scanned {
                phone: owner,
                phone_ip,
                at,
            } if crate::secret::constant_time_eq(owner.as_bytes(), phone.as_bytes()) => {
                Ok(Ticket {
                    state: State::Authorized {
                        phone: owner.clone(),
                        phone_ip: phone_ip.clone(),
                        at: *at,
                        identity,
                    },
                    ..self.clone()
                })
            }
            _ => Err(Refusal::Used),
        }
    }

    /// Whether `phone` owns the ticket and may decide now (the confirmation page).
    pub(super) fn awaiting_decision_of(
        &self,
        phone: &str,
        settings: &QrSettings,
        now: u64,
    ) -> Result<(), Refusal> {
        self.live(settings, now)?;
        match &self.state {
            State::Authorized { phone: owner, .. }
                if crate::secret::constant_time_eq(owner.as_bytes(), phone.as_bytes()) =>
            {
                Ok(())
            }
            _ => Err(Refusal::Used),
        }
    }

    /// The owning phone tapped 确认登录 (`approve`) or 取消.
    pub(super) fn decide(
        &self,
        phone: &str,
        approve: bool,
        settings: &QrSettings,
        now: u64,
    ) -> Result<Ticket, Refusal> {
        self.awaiting_decision_of(phone, settings, now)?;
        let State::Authorized { identity, .. } = &self.state else {
            return Err(Refusal::Used);
        };
        let state = if approve {
            State::Approved {
                at: now,
                identity: identity.clone(),
            }
        } else {
            State::Rejected { at: now }
        };
        Ok(Ticket {
            state,
            ..self.clone()
        })
    }

    /// The identity the desktop may now log in as: approved and within `redeem_ttl`.
    pub(super) fn redeemable(&self, settings: &QrSettings, now: u64) -> Result<&Identity, Refusal> {
        self.live(settings, now)?;
        match &self.state {
            State::Approved { identity, .. } => Ok(identity),
            _ => Err(Refusal::Used),
        }
    }

    /// The phone's address recorded at the scan, if any.
    pub(super) fn phone_ip(&self) -> Option<&str> {
        match &self.state {
            State::Scanned { phone_ip, .. } | State::Authorized { phone_ip, .. } => {
                phone_ip.as_deref()
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Scope;

    fn settings() -> QrSettings {
        QrSettings {
            enabled: true,
            ..QrSettings::default()
        }
    }

    fn ticket(created_ms: u64) -> Ticket {
        Ticket {
            tenant: "wx0000000000000001".into(),
            return_path: ReturnPath::default(),
            desktop: "d".into(),
            desktop_ip: None,
            desktop_agent: "Chrome · Windows".into(),
            created_ms,
            state: State::Pending,
        }
    }

    fn someone() -> Identity {
        Identity {
            openid: "o1".into(),
            unionid: None,
            nickname: "n".into(),
            avatar: String::new(),
            appid: "wx0000000000000001".into(),
            scope: Scope::UserInfo,
        }
    }

    #[test]
    fn the_happy_path_and_its_statuses() {
        let s = settings();
        let t = ticket(0);
        assert_eq!(t.status(&s, 1), Status::Pending);
        let t = t.scan("p", None, &s, 1_000).unwrap();
        assert_eq!(t.status(&s, 1_000), Status::Scanned);
        let t = t.authorize("p", someone(), &s, 2_000).unwrap();
        assert_eq!(t.status(&s, 2_000), Status::Scanned, "no hint who it is");
        let t = t.decide("p", true, &s, 3_000).unwrap();
        assert_eq!(t.status(&s, 3_000), Status::Approved);
        assert_eq!(t.redeemable(&s, 3_000).unwrap().openid.as_str(), "o1");
    }

    #[test]
    fn the_first_phone_wins() {
        let s = settings();
        let t = ticket(0).scan("p", None, &s, 10).unwrap();
        assert_eq!(
            t.scan("p", None, &s, 20),
            Ok(t.clone()),
            "the same phone again"
        );
        assert_eq!(t.scan("q", None, &s, 20), Err(Refusal::Used));
        assert_eq!(t.authorize("q", someone(), &s, 20), Err(Refusal::Used));
        let t = t.authorize("p", someone(), &s, 30).unwrap();
        assert_eq!(t.decide("q", true, &s, 40), Err(Refusal::Used));
        assert_eq!(t.scan("q", None, &s, 40), Err(Refusal::Used));
    }

    #[test]
    fn every_state_has_its_deadline_and_the_absolute_cap() {
        let s = settings();
        let t = ticket(0);
        assert_eq!(t.status(&s, 119_999), Status::Pending);
        assert_eq!(t.status(&s, 120_000), Status::Expired);
        assert_eq!(t.scan("p", None, &s, 120_000), Err(Refusal::Expired));
        let scanned = t.scan("p", None, &s, 100_000).unwrap();
        assert_eq!(scanned.status(&s, 219_999), Status::Scanned);
        assert_eq!(scanned.status(&s, 220_000), Status::Expired);
        let authorized = scanned.authorize("p", someone(), &s, 150_000).unwrap();
        assert_eq!(
            authorized.decide("p", true, &s, 220_000),
            Err(Refusal::Expired),
            "the confirmation deadline runs from the scan"
        );
        let approved = authorized.decide("p", true, &s, 200_000).unwrap();
        assert!(approved.redeemable(&s, 259_999).is_ok());
        assert_eq!(approved.redeemable(&s, 260_000), Err(Refusal::Expired));
        let late = Ticket {
            created_ms: 0,
            state: State::Approved {
                at: 280_000,
                identity: someone(),
            },
            ..t
        };
        assert_eq!(
            late.redeemable(&s, 300_000),
            Err(Refusal::Expired),
            "absolute cap"
        );
        assert_eq!(late.expires_in(&s, 299_001), 1);
    }

    #[test]
    fn only_approved_tickets_redeem() {
        let s = settings();
        let t = ticket(0);
        assert_eq!(t.redeemable(&s, 1), Err(Refusal::Used));
        let t = t.scan("p", None, &s, 1).unwrap();
        assert_eq!(t.redeemable(&s, 2), Err(Refusal::Used));
        let t = t.authorize("p", someone(), &s, 3).unwrap();
        assert_eq!(t.redeemable(&s, 4), Err(Refusal::Used));
        let rejected = t.decide("p", false, &s, 5).unwrap();
        assert_eq!(rejected.status(&s, 6), Status::Rejected);
        assert_eq!(rejected.redeemable(&s, 6), Err(Refusal::Used));
    }
}
