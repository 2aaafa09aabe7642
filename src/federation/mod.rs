//! Upstream identity: the providers people already sign in with, as data in `config/idps/`
//! (`oidc`, `cis2`, `nhs_login`), behind one interface — begin a sign-in (an authorization URL
//! and what to remember), complete it (an [`Identity`]) — and a registry by id. The development
//! sign-in (`dev`) is a form instead of a redirect.

pub mod backchannel;
pub mod cis_sso;
pub mod dev;
pub mod oidc;
pub mod profiles;
pub mod proxy;
pub mod round_trip;
pub mod saml;
pub mod saml_logout;
pub mod session;
pub mod xml;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::clock::Clock;
use crate::config::idps::{IdpConfig, IdpKind};
use crate::domain::identity::Identity;
use oidc::{OidcClient, RoundTrip};

/// Why a sign-in failed. Shown to the user on a page (never a secret in it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignInError {
    /// The provider could not be reached or answered badly.
    #[error("the identity provider could not complete the sign-in: {0}")]
    Upstream(String),
    /// The provider's token failed a check (signature, issuer, audience, nonce, expiry…).
    #[error("the identity provider's answer failed a security check: {0}")]
    IdToken(String),
    /// The identity is valid but not acceptable here (assurance, role, NHS number…).
    #[error("{0}")]
    Rejected(String),
    /// The provider returned an OAuth error (e.g. `login_required`, `access_denied`).
    #[error("the identity provider returned `{code}`{}", .description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Provider { code: String, description: Option<String> },
}

impl SignInError {
    /// A provider or transport failure, as its message.
    pub fn upstream(e: impl std::fmt::Display) -> Self {
        Self::Upstream(e.to_string())
    }
}

/// Why the providers could not be built at start-up.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// One part of the federation configuration (a provider, the SAML service provider, the
    /// Spine Security Broker client) could not be built.
    #[error("{part}: {reason}")]
    Part { part: String, reason: String },
}

/// The `iss` of a compact JWS, read before verification only to pick who must then verify it.
pub fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine as _;
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

/// Who hands us an upstream ID token to verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presentation {
    /// A trusted EHR in `POST /launch`.
    Launch,
    /// A partner app in token exchange.
    Exchange,
}

/// Options for one sign-in.
#[derive(Debug, Clone, Default)]
pub struct BeginOptions {
    /// Force a fresh sign-in at the provider (`prompt=login`).
    pub force_login: bool,
    /// Silent sign-in (`prompt=none`).
    pub silent: bool,
    /// NHS login single sign-on (from the NHS App's `assertedLoginIdentity`).
    pub asserted_login_identity: Option<String>,
}

/// An upstream provider with its kind's rules: OpenID Connect (generic, CIS2, NHS login) or SAML.
#[derive(Debug)]
pub struct UpstreamProvider {
    config: IdpConfig,
    protocol: Protocol,
}

#[derive(Debug)]
enum Protocol {
    Oidc(OidcClient),
    Saml(saml::SamlIdp),
}

impl UpstreamProvider {
    pub fn id(&self) -> &str {
        &self.config.id
    }
    pub fn name(&self) -> &str {
        &self.config.name
    }
    pub fn kind(&self) -> IdpKind {
        self.config.kind
    }
    pub fn config(&self) -> &IdpConfig {
        &self.config
    }

    /// The OpenID Connect client, unless this is a SAML provider.
    pub fn oidc(&self) -> Option<&OidcClient> {
        match &self.protocol {
            Protocol::Oidc(client) => Some(client),
            Protocol::Saml(_) => None,
        }
    }

    /// The SAML provider, if this is one.
    pub fn saml(&self) -> Option<&saml::SamlIdp> {
        match &self.protocol {
            Protocol::Saml(idp) => Some(idp),
            Protocol::Oidc(_) => None,
        }
    }

    /// The URL to send the browser to.
    pub async fn begin(&self, redirect_uri: &str, options: &BeginOptions) -> Result<(String, RoundTrip), SignInError> {
        let client = match &self.protocol {
            Protocol::Oidc(client) => client,
            Protocol::Saml(_) if options.silent => {
                return Err(SignInError::Provider { code: "login_required".into(), description: None });
            }
            Protocol::Saml(idp) => return idp.begin(options.force_login).await,
        };
        let config = &self.config;
        let mut extra: Vec<(&str, String)> = Vec::new();
        let mut vtr = Vec::new();
        match config.kind {
            IdpKind::Cis2 => {
                if let Some(acr) = &config.acr_values {
                    extra.push(("acr_values", acr.clone()));
                }
                if config.select_role && !options.silent {
                    // CIS2 role selection: the `selectedrole` scope with prompt=login.
                    extra.push(("prompt", "login".into()));
                }
            }
            IdpKind::NhsLogin => {
                vtr = config.vtr();
                extra.push(("vtr", serde_json::to_string(&vtr).unwrap_or_default()));
                if let Some(assertion) = &options.asserted_login_identity {
                    extra.push(("asserted_login_identity", assertion.clone()));
                }
            }
            IdpKind::Oidc | IdpKind::Saml => {}
        }
        let has_prompt = extra.iter().any(|(k, _)| *k == "prompt");
        if options.silent {
            extra.push(("prompt", "none".into()));
        } else if options.force_login && !has_prompt {
            extra.push(("prompt", "login".into()));
        }
        client.authorization_url(redirect_uri, &extra, vtr).await
    }

    /// Completes an OpenID Connect sign-in from the provider's answer (the code).
    pub async fn complete(
        &self,
        trip: &RoundTrip,
        redirect_uri: &str,
        code: &str,
        now: i64,
    ) -> Result<Identity, SignInError> {
        let Protocol::Oidc(client) = &self.protocol else {
            return Err(SignInError::Upstream("a SAML provider answers at /saml/acs".into()));
        };
        let claims = client.redeem(trip, redirect_uri, code).await?;
        let config = &self.config;
        match config.kind {
            IdpKind::Cis2 => profiles::cis2(config, &claims, config.max_auth_age_secs, now),
            IdpKind::NhsLogin => profiles::nhs_login(config, &claims, trip, now),
            IdpKind::Oidc | IdpKind::Saml => profiles::generic(config, &claims, now),
        }
    }
}

impl UpstreamProvider {
    /// Verifies the ID token a trusted EHR presents in `POST /launch` (with the access token for
    /// userinfo when the provider keeps roles there, as CIS2 does): signature, exact issuer, `aud`
    /// one of our client ids at the provider, expiry, then the kind's rules (assurance, selected
    /// role) with the sign-in allowed to be as old as `presented_max_auth_age_secs`.
    pub async fn presented(
        &self,
        id_token: &str,
        access_token: Option<&str>,
        now: i64,
    ) -> Result<Identity, SignInError> {
        self.verify_id_token(id_token, access_token, now, Presentation::Launch).await
    }

    /// Verifies the ID token a partner app exchanges at the token endpoint (RFC 8693), with the
    /// same checks as a presented one; the provider file must say `accept_exchange = true`.
    pub async fn exchanged(&self, id_token: &str, now: i64) -> Result<Identity, SignInError> {
        self.verify_id_token(id_token, None, now, Presentation::Exchange).await
    }

    /// Verifies the signed SAML assertion (base64url) a partner app exchanges at the token
    /// endpoint; the provider file must say `accept_exchange = true`.
    pub async fn exchanged_assertion(
        &self,
        assertion: &str,
        replays: &dyn crate::store::EphemeralStore,
        now: i64,
    ) -> Result<Identity, SignInError> {
        let Protocol::Saml(idp) = &self.protocol else {
            return Err(SignInError::Rejected(format!("`{}` is not a SAML provider", self.config.id)));
        };
        if !self.config.accept_exchange {
            return Err(SignInError::Rejected(format!(
                "`{}` assertions are not accepted in token exchange",
                self.config.id
            )));
        }
        let mut identity = idp.exchanged(assertion, replays, now).await?;
        identity.amr.push("token-exchange".into());
        Ok(identity)
    }

    async fn verify_id_token(
        &self,
        id_token: &str,
        access_token: Option<&str>,
        now: i64,
        presentation: Presentation,
    ) -> Result<Identity, SignInError> {
        let config = &self.config;
        let Protocol::Oidc(client) = &self.protocol else {
            return Err(SignInError::Rejected(format!("`{}` is not an OpenID Connect provider", config.id)));
        };
        let (accepted, by) = match presentation {
            Presentation::Launch => (config.accept_presented_tokens, "from EHRs"),
            Presentation::Exchange => (config.accept_exchange, "in token exchange"),
        };
        if !accepted {
            return Err(SignInError::Rejected(format!("`{}` tokens are not accepted {by}", config.id)));
        }
        let audiences: Vec<&str> = std::iter::once(config.client_id.as_str())
            .chain(config.presented_audiences.iter().map(String::as_str))
            .collect();
        let mut claims = client.verify_presented_id_token(id_token, &audiences).await?;
        if let (true, Some(access)) = (client.uses_userinfo(), access_token) {
            client.merge_userinfo(&mut claims, access).await?;
        }
        let max_age = config.presented_max_auth_age_secs;
        let mut identity = match (config.kind, presentation) {
            (IdpKind::Cis2, _) => profiles::cis2(config, &claims, max_age, now)?,
            (IdpKind::Oidc, _) => profiles::generic(config, &claims, now)?,
            (IdpKind::NhsLogin, Presentation::Exchange) => {
                // the vector of trust must be one we would have asked for
                let asked = RoundTrip { requested_vtr: config.vtr(), ..RoundTrip::default() };
                profiles::nhs_login(config, &claims, &asked, now)?
            }
            (other @ (IdpKind::NhsLogin | IdpKind::Saml), _) => {
                return Err(SignInError::Rejected(format!("`{other}` tokens cannot be presented {by}")));
            }
        };
        identity.amr.push(
            match presentation {
                Presentation::Launch => "ehr-presented",
                Presentation::Exchange => "token-exchange",
            }
            .into(),
        );
        Ok(identity)
    }
}

/// The configured upstream providers by id.
#[derive(Debug)]
pub struct Registry {
    providers: BTreeMap<String, Arc<UpstreamProvider>>,
    /// The Spine Security Broker, when legacy smartcard sessions are accepted.
    pub cis_sso: Option<cis_sso::SsbClient>,
    /// carebroker as a SAML service provider (for its metadata).
    pub saml_sp: Arc<saml::SpSettings>,
}

impl Registry {
    /// Builds every provider (loading private keys).
    pub fn build(
        idps: &[IdpConfig],
        broker: &crate::config::Config,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, FederationError> {
        let mut providers = BTreeMap::new();
        let saml_sp = Arc::new(
            saml::SpSettings::from_config(broker)
                .map_err(|e| FederationError::Part { part: "federation.saml".into(), reason: e.to_string() })?,
        );
        let provider_error = |id: &str, e: &dyn std::fmt::Display| FederationError::Part {
            part: format!("identity provider `{id}`"),
            reason: e.to_string(),
        };
        for config in idps.iter().filter(|c| c.kind == IdpKind::Saml) {
            let idp = saml::SamlIdp::new(config.clone(), saml_sp.clone(), clock.clone())
                .map_err(|e| provider_error(&config.id, &e))?;
            providers.insert(
                config.id.clone(),
                Arc::new(UpstreamProvider { config: config.clone(), protocol: Protocol::Saml(idp) }),
            );
        }
        for config in idps.iter().filter(|c| c.kind != IdpKind::Saml) {
            let mut config = config.clone();
            for required in ["openid"]
                .into_iter()
                .chain((config.kind == IdpKind::Cis2 && config.select_role).then_some("selectedrole"))
            {
                if !config.scopes.iter().any(|s| s == required) {
                    config.scopes.push(required.to_owned());
                }
            }
            let client = OidcClient::new(config.clone(), clock.clone()).map_err(|e| provider_error(&config.id, &e))?;
            providers
                .insert(config.id.clone(), Arc::new(UpstreamProvider { config, protocol: Protocol::Oidc(client) }));
        }
        let sso = &broker.federation.cis_sso;
        let cis_sso = if sso.enabled {
            Some(
                cis_sso::SsbClient::new(sso.clone())
                    .map_err(|e| FederationError::Part { part: "federation.cis_sso".into(), reason: e.to_string() })?,
            )
        } else {
            None
        };
        Ok(Self { providers, cis_sso, saml_sp })
    }

    pub fn get(&self, id: &str) -> Option<Arc<UpstreamProvider>> {
        self.providers.get(id).cloned()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<UpstreamProvider>> {
        self.providers.values()
    }

    /// The provider that issued a compact JWS, by its `iss` (read before verification only to
    /// pick the provider that must then verify it). `Err(None)` when the token has no readable
    /// `iss`; `Err(Some(iss))` when no provider has that issuer.
    pub fn for_token(&self, token: &str) -> Result<Arc<UpstreamProvider>, Option<String>> {
        let issuer = unverified_issuer(token).ok_or(None)?;
        self.by_issuer(&issuer).ok_or(Some(issuer))
    }

    /// The provider that issued a base64url SAML assertion, by its Issuer (read before
    /// verification only to pick the provider that must then verify it); errors as [`Self::for_token`].
    pub fn for_assertion(&self, assertion: &str) -> Result<Arc<UpstreamProvider>, Option<String>> {
        let issuer = saml::unverified_assertion_issuer(assertion).ok_or(None)?;
        self.by_issuer(&issuer).ok_or(Some(issuer))
    }

    /// The provider whose exact issuer is `issuer`.
    pub fn by_issuer(&self, issuer: &str) -> Option<Arc<UpstreamProvider>> {
        self.providers.values().find(|p| p.config().issuer == issuer).cloned()
    }
}
