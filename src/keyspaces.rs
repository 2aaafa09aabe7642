//! Every namespace of the ephemeral store (memory in the embedded default, Redis when scaled
//! out), with the type of what it holds. Nothing else in carebroker names an ephemeral key
//! prefix: a feature that needs short-lived state adds a line here.

use crate::domain::launch::EhrLaunch;
use crate::federation::round_trip::{PendingLogout, Upstream, Verified};
use crate::oauth::authorize::{CodeRecord, Pending};
use crate::oauth::par::PushedRequest;
use crate::pds::PdsVerdict;
use crate::store::keyspace::Keyspace;

/// Authorization requests waiting for sign-in, a patient choice or consent, by request id.
pub const AUTHORIZATIONS: Keyspace<Pending> = Keyspace::new("authz");
/// Pushed authorization requests (RFC 9126), by the id in their `request_uri`; taken once.
pub const PUSHED_REQUESTS: Keyspace<PushedRequest> = Keyspace::new("par");
/// Authorization codes, by the code's hash; taken once.
pub const CODES: Keyspace<CodeRecord> = Keyspace::new("code");
/// Redeemed codes, by the code's hash: the grant to revoke if one comes back.
pub const USED_CODES: Keyspace<String> = Keyspace::new("code-used");
/// Live sign-in sessions, by session id (what `online_access` grants depend on).
pub const SIGN_INS: Keyspace<()> = Keyspace::new("signin");
/// Registered launches (EHR and NHS App), by launch id; taken once.
pub const LAUNCHES: Keyspace<EhrLaunch> = Keyspace::new("launch");
/// Round trips to an upstream provider, by their `state` / RelayState; taken once.
pub const UPSTREAM: Keyspace<Upstream> = Keyspace::new("upstream");
/// Our sign-in session by `{provider}:{provider's session id}` (OIDC `sid`, SAML SessionIndex).
pub const UPSTREAM_SIDS: Keyspace<String> = Keyspace::new("upstream-sid");
/// Our sign-in session by `{provider}:{provider's subject}` (OIDC `sub`, SAML NameID).
pub const UPSTREAM_SUBS: Keyspace<String> = Keyspace::new("upstream-sub");
/// SAML sign-ins verified at the ACS, waiting for the browser that began them; taken once.
pub const SAML_VERIFIED: Keyspace<Verified> = Keyspace::new("saml-verified");
/// Logouts we asked a SAML provider for, by RelayState.
pub const SAML_LOGOUTS: Keyspace<PendingLogout> = Keyspace::new("saml-logout");
/// Replay cache: SAML assertion ids, by `{provider}:{id}`.
pub const SAML_ASSERTIONS: Keyspace<()> = Keyspace::new("saml-assertion");
/// Replay cache: SAML logout request ids, by `{provider}:{id}`.
pub const SAML_LOGOUT_REQUESTS: Keyspace<()> = Keyspace::new("saml-logout-request");
/// Replay cache: client assertion `jti`s (RFC 7523), by `{client}:{jti}`.
pub const ASSERTION_JTIS: Keyspace<()> = Keyspace::new("assertion-jti");
/// Replay cache: partner JWT `jti`s in token exchange, by `{partner}:{jti}`.
pub const PARTNER_JTIS: Keyspace<()> = Keyspace::new("partner-jti");
/// Replay cache: back-channel logout token `jti`s, by `{provider}:{jti}`.
pub const LOGOUT_JTIS: Keyspace<()> = Keyspace::new("logout-jti");
/// Replay cache: DPoP proof `jti`s, by `{key thumbprint}:{jti}`.
pub const DPOP_JTIS: Keyspace<()> = Keyspace::new("dpop-jti");
/// DPoP server nonces handed out and still accepted.
pub const DPOP_NONCES: Keyspace<()> = Keyspace::new("dpop-nonce");
/// Never written: `/readyz` reads it to see that the ephemeral store answers.
pub const READINESS: Keyspace<()> = Keyspace::new("readiness");
/// PDS answers, by NHS number.
pub const PDS_VERDICTS: Keyspace<PdsVerdict> = Keyspace::new("pds");
/// Browser sessions (tower-sessions records), by session id.
pub const BROWSER_SESSIONS: Keyspace<tower_sessions::session::Record> = Keyspace::new("session");

/// Every prefix above (a test checks no two are the same).
pub const PREFIXES: [&str; 21] = [
    AUTHORIZATIONS.prefix(),
    PUSHED_REQUESTS.prefix(),
    CODES.prefix(),
    USED_CODES.prefix(),
    SIGN_INS.prefix(),
    LAUNCHES.prefix(),
    UPSTREAM.prefix(),
    UPSTREAM_SIDS.prefix(),
    UPSTREAM_SUBS.prefix(),
    SAML_VERIFIED.prefix(),
    SAML_LOGOUTS.prefix(),
    SAML_ASSERTIONS.prefix(),
    SAML_LOGOUT_REQUESTS.prefix(),
    ASSERTION_JTIS.prefix(),
    LOGOUT_JTIS.prefix(),
    PARTNER_JTIS.prefix(),
    DPOP_JTIS.prefix(),
    DPOP_NONCES.prefix(),
    PDS_VERDICTS.prefix(),
    READINESS.prefix(),
    BROWSER_SESSIONS.prefix(),
];

#[cfg(test)]
mod tests {
    #[test]
    fn every_namespace_has_its_own_prefix() {
        let prefixes = super::PREFIXES;
        let mut unique = prefixes.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), prefixes.len(), "{prefixes:?}");
    }
}
