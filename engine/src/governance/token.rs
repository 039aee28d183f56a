//! Signed, expiring statements of who someone is: `base64url(user \n expiry) .
//! base64url(hmac-sha256)`. Used for the server's bearer tokens, and for passing the
//! end user on to another meshql node in a form it can trust:
//!
//! a gateway signs in to a node with its own credentials. When the source is
//! configured with a `delegation_secret`, every statement also carries
//! [`DELEGATION_HEADER`]: the end user's name and an expiry, signed (HMAC-SHA256) with
//! that secret. A node whose `access.users.<gateway>.delegation_secret` is the same
//! secret runs the statement as that user, under its own policies; without it the
//! header is refused, so a gateway cannot claim to be someone else.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The gRPC header carrying the signed end user.
pub const DELEGATION_HEADER: &str = "x-meshql-on-behalf-of";

/// How long a signed identity is valid: long enough for a statement's calls
/// (GetFlightInfo, then DoGet), short enough that a captured header is soon useless.
pub const DELEGATION_TTL: Duration = Duration::from_secs(60);

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length.
    <HmacSha256 as KeyInit>::new_from_slice(secret).unwrap_or_else(|_| unreachable!())
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What a token is for: a token of one kind is never accepted as the other, even if
/// an operator gave both the same secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The server's own bearer token after sign-in.
    Bearer,
    /// A gateway vouching for an end user.
    Delegation,
}

impl Purpose {
    fn tag(self) -> &'static str {
        match self {
            Purpose::Bearer => "meshql-bearer/1",
            Purpose::Delegation => "meshql-delegation/1",
        }
    }
}

/// Clocks of two machines may differ by this much.
const CLOCK_SKEW_S: u64 = 60;

/// A token for `user` valid until `expiry` (seconds since the epoch).
pub fn sign(secret: &[u8], purpose: Purpose, user: &str, expiry: u64) -> String {
    seal(secret, &format!("{}\n{user}\n{expiry}", purpose.tag()))
}

/// `payload` and its HMAC, both base64url.
fn seal(secret: &[u8], payload: &str) -> String {
    let mut m = mac(secret);
    m.update(payload.as_bytes());
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
    )
}

/// The payload of a sealed token, if its HMAC is right.
fn open(secret: &[u8], token: &str) -> Result<String, &'static str> {
    let (payload, tag) = token.split_once('.').ok_or("malformed")?;
    let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| "malformed")?;
    let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| "malformed")?;
    let mut m = mac(secret);
    m.update(&payload);
    m.verify_slice(&tag).map_err(|_| "bad signature")?;
    String::from_utf8(payload).map_err(|_| "malformed")
}

/// `expiry` is in the future, and no further than `max_ttl` (give or take clock skew).
fn check_expiry(expiry: u64, max_ttl: Duration) -> Result<(), &'static str> {
    let now = now_secs();
    if expiry < now {
        return Err("expired");
    }
    if expiry > now + max_ttl.as_secs() + CLOCK_SKEW_S {
        return Err("valid for too long");
    }
    Ok(())
}

/// The user a token was signed for, if its signature is right, it is for `purpose`, it
/// has not expired and it does not claim to live longer than `max_ttl`.
pub fn verify(
    secret: &[u8],
    purpose: Purpose,
    token: &str,
    max_ttl: Duration,
) -> Result<String, &'static str> {
    let payload = open(secret, token)?;
    let mut parts = payload.splitn(3, '\n');
    let (Some(tag), Some(user), Some(expiry)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("malformed");
    };
    if tag != purpose.tag() {
        return Err("not meant for this use");
    }
    check_expiry(expiry.parse().map_err(|_| "malformed")?, max_ttl)?;
    Ok(user.to_string())
}

/// A bearer token's claims: who, until when, and when they signed in with a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    pub expiry: u64,
    /// Seconds since the epoch of the password sign-in this token descends from: renewing
    /// a token keeps it, so a session ends `session_max` after it, renewed or not.
    pub signed_in: u64,
}

const SESSION_TAG: &str = "meshql-bearer/2";

/// A bearer token for `session`.
pub fn sign_session(secret: &[u8], session: &Session) -> String {
    // The user last: a name may hold any character.
    seal(
        secret,
        &format!(
            "{SESSION_TAG}\n{}\n{}\n{}",
            session.expiry, session.signed_in, session.user
        ),
    )
}

/// The session a bearer token carries, if its signature is right, it has not expired, it
/// does not claim to live longer than `max_ttl`, and its sign-in is under `session_max` old.
pub fn verify_session(
    secret: &[u8],
    token: &str,
    max_ttl: Duration,
    session_max: Duration,
) -> Result<Session, &'static str> {
    let payload = open(secret, token)?;
    let mut parts = payload.splitn(4, '\n');
    let (Some(tag), Some(expiry), Some(signed_in), Some(user)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed");
    };
    if tag != SESSION_TAG {
        return Err("not meant for this use");
    }
    let expiry: u64 = expiry.parse().map_err(|_| "malformed")?;
    let signed_in: u64 = signed_in.parse().map_err(|_| "malformed")?;
    check_expiry(expiry, max_ttl)?;
    let now = now_secs();
    if now.saturating_sub(signed_in) > session_max.as_secs() || signed_in > now + CLOCK_SKEW_S {
        return Err("past the session's maximum lifetime");
    }
    Ok(Session {
        user: user.to_string(),
        expiry,
        signed_in,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_ends_at_its_maximum_lifetime_however_renewed() {
        let (ttl, max) = (Duration::from_secs(60), Duration::from_secs(3600));
        let now = now_secs();
        let fresh = Session {
            user: "a\nb".into(),
            expiry: now + 60,
            signed_in: now - 10,
        };
        let token = sign_session(b"k", &fresh);
        assert_eq!(verify_session(b"k", &token, ttl, max), Ok(fresh.clone()));
        let old = Session {
            signed_in: now - 3601,
            ..fresh.clone()
        };
        assert_eq!(
            verify_session(b"k", &sign_session(b"k", &old), ttl, max),
            Err("past the session's maximum lifetime")
        );
        // A delegation token is never a bearer token.
        let other = sign(b"k", Purpose::Delegation, "a", now + 60);
        assert!(verify_session(b"k", &other, ttl, max).is_err());
        assert_eq!(
            verify_session(b"k2", &token, ttl, max),
            Err("bad signature")
        );
    }

    #[test]
    fn only_the_right_secret_purpose_and_lifetime_pass() {
        let ttl = DELEGATION_TTL;
        let soon = now_secs() + ttl.as_secs();
        let token = sign(b"k1", Purpose::Delegation, "ana", soon);
        assert_eq!(
            verify(b"k1", Purpose::Delegation, &token, ttl),
            Ok("ana".to_string())
        );
        assert_eq!(
            verify(b"k2", Purpose::Delegation, &token, ttl),
            Err("bad signature")
        );
        // The same secret, another purpose.
        assert_eq!(
            verify(b"k1", Purpose::Bearer, &token, ttl),
            Err("not meant for this use")
        );
        // A payload changed after signing.
        let (_, tag) = token.split_once('.').expect("token");
        let forged = format!(
            "{}.{tag}",
            URL_SAFE_NO_PAD.encode(format!("meshql-delegation/1\nroot\n{soon}"))
        );
        assert_eq!(
            verify(b"k1", Purpose::Delegation, &forged, ttl),
            Err("bad signature")
        );
        assert_eq!(
            verify(b"k1", Purpose::Delegation, "nonsense", ttl),
            Err("malformed")
        );
        let old = sign(b"k1", Purpose::Delegation, "ana", now_secs() - 1);
        assert_eq!(
            verify(b"k1", Purpose::Delegation, &old, ttl),
            Err("expired")
        );
        let forever = sign(b"k1", Purpose::Delegation, "ana", now_secs() + 86_400);
        assert_eq!(
            verify(b"k1", Purpose::Delegation, &forever, ttl),
            Err("valid for too long")
        );
    }
}
