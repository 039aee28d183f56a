//! Sign-in: Basic credentials (padded or not, as ADBC sends them unpadded) checked
//! against `access.users`, exchanged for a signed, expiring bearer token that any
//! replica holding the same secret can verify. No session state lives in the server.
//!
//! A user with a `delegation_secret` (a gateway) may run a statement for another user
//! by sending that user's name signed with the secret (see
//! [`meshql_engine::governance::token`]); the statement then runs as that user.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use meshql_engine::config::access::AccessConfig;
use meshql_engine::governance::Governance;
use meshql_engine::governance::audit::AuditRecord;
use meshql_engine::governance::token::{
    self, DELEGATION_HEADER, DELEGATION_TTL, Purpose, Session, now_secs,
};

use super::throttle::SignInThrottle;

/// Failed password sign-ins per user name a minute before its sign-ins are refused.
pub(crate) const DEFAULT_MAX_FAILURES: usize = 10;
use sha2::{Digest, Sha256};
use tonic::Status;
use tonic::metadata::MetadataMap;

pub use meshql_engine::Identity;

#[derive(Clone)]
struct User {
    /// SHA-256 of the password.
    digest: [u8; 32],
    groups: Vec<String>,
    /// Set for gateways that may run statements for other users.
    delegation_secret: Option<Vec<u8>>,
}

/// Checks credentials and tokens. `users == None` is open mode: everyone is let in.
pub struct Authenticator {
    users: Option<BTreeMap<String, User>>,
    secret: Vec<u8>,
    ttl: Duration,
    /// A session (a password sign-in and the tokens renewed from it) ends this long
    /// after the password was given.
    session_max: Duration,
    throttle: SignInThrottle,
    /// Where failed sign-ins are recorded.
    audit: Option<Arc<Governance>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("open", &self.users.is_none())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// `secret`: the token signing key; replicas behind one address must share it. A
    /// random one is made when none is given (tokens then die with the process).
    pub fn new(access: Option<&AccessConfig>, secret: Option<&str>, ttl: Duration) -> Self {
        let users = access.map(|a| {
            a.users
                .iter()
                .map(|(name, u)| {
                    let digest = match (&u.password, &u.password_sha256) {
                        (Some(p), _) => Sha256::digest(p.as_bytes()).into(),
                        (None, Some(hex)) => decode_hex(hex),
                        // Rejected when the mesh loads; an impossible digest locks the user out.
                        (None, None) => [0; 32],
                    };
                    (
                        name.clone(),
                        User {
                            digest,
                            groups: u.groups.clone(),
                            delegation_secret: u
                                .delegation_secret
                                .as_ref()
                                .map(|s| s.as_bytes().to_vec()),
                        },
                    )
                })
                .collect()
        });
        let secret = match secret {
            Some(s) => s.as_bytes().to_vec(),
            None => rand::random::<[u8; 32]>().to_vec(),
        };
        Authenticator {
            users,
            secret,
            ttl,
            session_max: Duration::from_secs(12 * 3600),
            throttle: SignInThrottle::new(DEFAULT_MAX_FAILURES),
            audit: None,
        }
    }

    /// End sessions `session_max` after their password sign-in (default 12 hours).
    pub fn with_session_max(mut self, session_max: Duration) -> Self {
        self.session_max = session_max;
        self
    }

    /// Refuse password sign-ins for a user after this many failures in a minute.
    pub fn with_max_failures(mut self, max_failures: usize) -> Self {
        self.throttle = SignInThrottle::new(max_failures);
        self
    }

    /// Record failed and throttled sign-ins in this mesh's audit log.
    pub fn with_audit(mut self, governance: Arc<Governance>) -> Self {
        self.audit = Some(governance);
        self
    }

    pub fn is_open(&self) -> bool {
        self.users.is_none()
    }

    /// The Handshake: check Basic credentials, return the identity and a bearer token.
    /// Renewing with a bearer token keeps the session's sign-in time, so a session ends
    /// `session_max` after its password, however often it is renewed.
    pub fn sign_in(
        &self,
        metadata: &MetadataMap,
        peer: Option<IpAddr>,
    ) -> Result<(Identity, String), Status> {
        let (identity, signed_in) = match authorization(metadata)? {
            Some(Credentials::Basic { user, password }) => {
                (self.check_password(&user, &password, peer)?, now_secs())
            }
            Some(Credentials::Bearer(token)) => self.verify(&token)?,
            None if self.is_open() => (anonymous(), now_secs()),
            None => {
                return Err(Status::unauthenticated(
                    "sign in with a user name and password (Basic authorization)",
                ));
            }
        };
        let token = self.issue(&identity.user, signed_in);
        Ok((identity, token))
    }

    /// Every other call: a bearer token from the Handshake (Basic is accepted too, for
    /// simple clients). Open mode lets calls without credentials in. A gateway's call
    /// on behalf of a user runs as that user.
    pub fn authenticate(
        &self,
        metadata: &MetadataMap,
        peer: Option<IpAddr>,
    ) -> Result<Identity, Status> {
        let caller = self.caller(metadata, peer)?;
        match metadata.get(DELEGATION_HEADER) {
            None => Ok(caller),
            Some(value) => {
                let token = value.to_str().map_err(|_| {
                    Status::unauthenticated(format!("the {DELEGATION_HEADER} header is not text"))
                })?;
                self.on_behalf_of(&caller, token)
            }
        }
    }

    /// The identity a gateway vouches for, if this node trusts the gateway to do so.
    fn on_behalf_of(&self, gateway: &Identity, token: &str) -> Result<Identity, Status> {
        let Some(users) = &self.users else {
            return Err(Status::permission_denied(
                "this node has no access rules, so it cannot run statements as another user; \
                 remove `delegation_secret` from the gateway's source",
            ));
        };
        let Some(secret) = users
            .get(&gateway.user)
            .and_then(|u| u.delegation_secret.as_ref())
        else {
            tracing::warn!(user = %gateway.user, "refused a statement on behalf of another user");
            return Err(Status::permission_denied(format!(
                "user `{}` may not run statements for other users (give it a \
                 `delegation_secret` in this node's access.users)",
                gateway.user
            )));
        };
        let user =
            token::verify(secret, Purpose::Delegation, token, DELEGATION_TTL).map_err(|why| {
                tracing::warn!(gateway = %gateway.user, why, "rejected an on-behalf-of identity");
                Status::unauthenticated(format!(
                    "the end user's identity from `{}` is {why}: check that the gateway's \
                 `delegation_secret` matches this node's and that both clocks are right",
                    gateway.user
                ))
            })?;
        // The node decides the user's groups: unknown users get none (deny by default).
        let groups = users
            .get(&user)
            .map(|u| u.groups.clone())
            .unwrap_or_default();
        tracing::debug!(gateway = %gateway.user, %user, "statement on behalf of a user");
        Ok(Identity { user, groups })
    }

    fn caller(&self, metadata: &MetadataMap, peer: Option<IpAddr>) -> Result<Identity, Status> {
        match authorization(metadata)? {
            Some(Credentials::Bearer(token)) => self.verify(&token).map(|(identity, _)| identity),
            Some(Credentials::Basic { user, password }) => {
                self.check_password(&user, &password, peer)
            }
            None if self.is_open() => Ok(anonymous()),
            None => Err(Status::unauthenticated(
                "no credentials: sign in (Handshake) and send `authorization: Bearer <token>`",
            )),
        }
    }

    fn check_password(
        &self,
        user: &str,
        password: &str,
        peer: Option<IpAddr>,
    ) -> Result<Identity, Status> {
        let Some(users) = &self.users else {
            // Open mode: the name is kept for logs, nothing is checked.
            return Ok(Identity {
                user: user.to_string(),
                groups: Vec::new(),
            });
        };
        let from = peer.map_or_else(|| "an unknown address".to_string(), |p| p.to_string());
        if let Err(seconds) = self.throttle.check(user, peer) {
            // Logged, not audited: the failures that led here were.
            tracing::warn!(user, %from, "sign-in refused: too many failed sign-ins");
            return Err(Status::resource_exhausted(format!(
                "too many failed sign-ins for this user or from this address: try again in {seconds} s"
            )));
        }
        let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        match users.get(user) {
            Some(u) if constant_time_eq(&u.digest, &digest) => {
                self.throttle.succeeded(user);
                Ok(Identity {
                    user: user.to_string(),
                    groups: u.groups.clone(),
                })
            }
            _ => {
                tracing::warn!(user, %from, "sign-in failed: wrong user name or password");
                if self.throttle.failed(user, peer) {
                    self.audit_sign_in(user, &format!("wrong user name or password, from {from}"));
                }
                Err(Status::unauthenticated("wrong user name or password"))
            }
        }
    }

    /// A denied sign-in in the audit log (written in the background: the caller is told
    /// no at once either way).
    fn audit_sign_in(&self, user: &str, reason: &str) {
        let Some(governance) = &self.audit else {
            return;
        };
        // The name is the caller's to choose: cut it.
        let name: String = user.chars().take(64).collect();
        let mut record = AuditRecord::new(&name, "(sign-in)");
        record.decision = meshql_engine::governance::audit::Decision::Denied;
        record.denial = Some(meshql_engine::governance::audit::Denial::SignIn);
        record.reason = Some(reason.to_string());
        let governance = Arc::clone(governance);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = governance.audit().write(record).await {
                    tracing::error!(error = %e, "cannot audit a failed sign-in");
                }
            });
        }
    }

    fn issue(&self, user: &str, signed_in: u64) -> String {
        let expiry = (now_secs() + self.ttl.as_secs())
            .min(signed_in.saturating_add(self.session_max.as_secs()));
        token::sign_session(
            &self.secret,
            &Session {
                user: user.to_string(),
                expiry,
                signed_in,
            },
        )
    }

    /// The identity and sign-in time a bearer token carries.
    fn verify(&self, token: &str) -> Result<(Identity, u64), Status> {
        let invalid = || {
            tracing::warn!("rejected an invalid or expired token");
            Status::unauthenticated("invalid or expired token: sign in again")
        };
        if self.is_open() && (token.is_empty() || token == "None") {
            // flightsql-dbapi sends `Bearer None` when it has no credentials.
            return Ok((anonymous(), now_secs()));
        }
        let session = token::verify_session(&self.secret, token, self.ttl, self.session_max)
            .map_err(|_| invalid())?;
        let groups = match &self.users {
            // A user removed from the mesh loses access even with a valid token.
            Some(users) => users.get(&session.user).ok_or_else(invalid)?.groups.clone(),
            None => Vec::new(),
        };
        Ok((
            Identity {
                user: session.user,
                groups,
            },
            session.signed_in,
        ))
    }
}

fn anonymous() -> Identity {
    Identity {
        user: "anonymous".into(),
        groups: Vec::new(),
    }
}

enum Credentials {
    Basic { user: String, password: String },
    Bearer(String),
}

fn authorization(metadata: &MetadataMap) -> Result<Option<Credentials>, Status> {
    let Some(value) = metadata.get("authorization") else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
    if let Some(token) = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
    {
        return Ok(Some(Credentials::Bearer(token.trim().to_string())));
    }
    if let Some(encoded) = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
    {
        // ADBC encodes without padding; accept both.
        let decoded = STANDARD_NO_PAD
            .decode(encoded.trim().trim_end_matches('='))
            .map_err(|_| Status::unauthenticated("Basic credentials are not valid base64"))?;
        let text = String::from_utf8(decoded)
            .map_err(|_| Status::unauthenticated("Basic credentials are not UTF-8"))?;
        let (user, password) = text
            .split_once(':')
            .ok_or_else(|| Status::unauthenticated("Basic credentials must be `user:password`"))?;
        return Ok(Some(Credentials::Basic {
            user: user.to_string(),
            password: password.to_string(),
        }));
    }
    Err(Status::unauthenticated(
        "unsupported authorization scheme: use Basic (sign-in) or Bearer (token)",
    ))
}

fn decode_hex(hex: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = hex
            .get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0);
    }
    out
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use meshql_engine::config::access::UserConfig;
    use tonic::metadata::MetadataValue;

    fn auth() -> Authenticator {
        let mut users = BTreeMap::new();
        users.insert(
            "alice".to_string(),
            UserConfig {
                password: Some("s3cret!".into()),
                password_sha256: None,
                groups: vec!["analysts".into()],
                delegation_secret: None,
            },
        );
        users.insert(
            "gateway".to_string(),
            UserConfig {
                password: Some("gw".into()),
                password_sha256: None,
                groups: vec!["gateways".into()],
                delegation_secret: Some("trust-me".into()),
            },
        );
        Authenticator::new(
            Some(&AccessConfig {
                users,
                ..AccessConfig::default()
            }),
            Some("k"),
            Duration::from_secs(60),
        )
    }

    fn basic(user_pass: &str, pad: bool) -> MetadataMap {
        let enc = if pad {
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        } else {
            STANDARD_NO_PAD.encode(user_pass)
        };
        let mut m = MetadataMap::new();
        m.insert(
            "authorization",
            MetadataValue::try_from(format!("Basic {enc}")).unwrap(),
        );
        m
    }

    #[test]
    fn sign_in_padded_or_not_then_bearer() {
        let a = auth();
        for pad in [true, false] {
            let (id, token) = a.sign_in(&basic("alice:s3cret!", pad), None).unwrap();
            assert_eq!(id.user, "alice");
            let mut m = MetadataMap::new();
            m.insert(
                "authorization",
                MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
            );
            assert_eq!(a.authenticate(&m, None).unwrap().groups, vec!["analysts"]);
        }
        assert!(a.sign_in(&basic("alice:wrong", false), None).is_err());
        assert!(a.sign_in(&basic("bob:s3cret!", false), None).is_err());
        assert!(a.authenticate(&MetadataMap::new(), None).is_err());
    }

    #[test]
    fn forged_and_expired_tokens_are_rejected() {
        let a = auth();
        let (_, token) = a.sign_in(&basic("alice:s3cret!", true), None).unwrap();
        let (payload, mac) = token.split_once('.').unwrap();
        let forged_payload = URL_SAFE_NO_PAD.encode("root\n99999999999");
        for bad in [
            format!("{forged_payload}.{mac}"),
            format!("{payload}.AAAA"),
            "x".into(),
        ] {
            assert!(a.verify(&bad).is_err(), "{bad}");
        }
        let other = Authenticator::new(None, Some("other"), Duration::from_secs(60));
        assert!(auth().verify(&other.issue("alice", now_secs())).is_err());
        let a = auth();
        // Tokens of the first format carried no sign-in time: sign in again.
        assert!(
            a.verify(&token::sign(
                b"k",
                Purpose::Bearer,
                "alice",
                now_secs() + 30
            ))
            .is_err()
        );
        assert!(
            a.verify(&token::sign(b"k", Purpose::Bearer, "alice", now_secs() - 1))
                .is_err()
        );
    }

    fn bearer(token: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
        );
        m
    }

    #[test]
    fn renewing_a_token_keeps_the_sessions_sign_in_time() {
        let a = auth().with_session_max(Duration::from_secs(3600));
        // A token renewed from one signed in long ago is refused: the password is needed.
        let old = a.issue("alice", now_secs() - 3601);
        assert!(a.sign_in(&bearer(&old), None).is_err());
        // A recent one renews, and the new token keeps the sign-in time.
        let signed_in = now_secs() - 100;
        let recent = a.issue("alice", signed_in);
        let (_, renewed) = a.sign_in(&bearer(&recent), None).unwrap();
        assert_eq!(a.verify(&renewed).unwrap().1, signed_in);
        // And it never outlives the session.
        let near_end = a.issue("alice", now_secs() - 3590);
        let session = token::verify_session(b"k", &near_end, a.ttl, a.session_max).unwrap();
        assert!(session.expiry <= now_secs() + 10, "{session:?}");
    }

    #[test]
    fn password_guessing_is_throttled() {
        let a = auth().with_max_failures(3);
        let here = Some("127.0.0.9".parse().unwrap());
        for _ in 0..3 {
            let e = a.sign_in(&basic("alice:guess", true), here).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated);
        }
        // Now even the right password waits, through the Handshake or Basic on a call.
        let e = a.sign_in(&basic("alice:s3cret!", true), here).unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
        assert!(e.message().contains("try again in"), "{e}");
        assert!(a.authenticate(&basic("alice:s3cret!", true), None).is_err());
        // Other users are not locked out by alice's guesser (from another address).
        assert!(a.sign_in(&basic("gateway:gw", true), None).is_ok());
    }

    fn on_behalf(mut m: MetadataMap, token: String) -> MetadataMap {
        m.insert(DELEGATION_HEADER, MetadataValue::try_from(token).unwrap());
        m
    }

    #[test]
    fn only_trusted_gateways_act_for_users() {
        let a = auth();
        let expiry = now_secs() + 60;
        // The gateway, with the right secret: runs as alice, with the node's groups for her.
        let m = on_behalf(
            basic("gateway:gw", true),
            token::sign(b"trust-me", Purpose::Delegation, "alice", expiry),
        );
        let id = a.authenticate(&m, None).unwrap();
        assert_eq!(
            (id.user.as_str(), id.groups),
            ("alice", vec!["analysts".to_string()])
        );
        // A user the node does not know gets no groups.
        let m = on_behalf(
            basic("gateway:gw", true),
            token::sign(b"trust-me", Purpose::Delegation, "mallory", expiry),
        );
        assert!(a.authenticate(&m, None).unwrap().groups.is_empty());
        // Wrong secret, expired, or a caller that is not a trusted gateway.
        let m = on_behalf(
            basic("gateway:gw", true),
            token::sign(b"guess", Purpose::Delegation, "alice", expiry),
        );
        assert_eq!(
            a.authenticate(&m, None).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let m = on_behalf(
            basic("gateway:gw", true),
            token::sign(b"trust-me", Purpose::Delegation, "alice", 1),
        );
        assert_eq!(
            a.authenticate(&m, None).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let m = on_behalf(
            basic("alice:s3cret!", true),
            token::sign(b"trust-me", Purpose::Delegation, "gateway", expiry),
        );
        assert_eq!(
            a.authenticate(&m, None).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        // The header is checked only after the caller signed in.
        let m = on_behalf(
            MetadataMap::new(),
            token::sign(b"trust-me", Purpose::Delegation, "alice", expiry),
        );
        assert_eq!(
            a.authenticate(&m, None).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }
}
