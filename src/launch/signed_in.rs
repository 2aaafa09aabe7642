//! Where a completed upstream sign-in leads: the browser is signed in (within the provider's
//! session limits), the session is indexed for provider logout, and then what the sign-in was
//! for continues: a pending authorization, or an NHS App journey.

use std::sync::Arc;

use super::journey::JourneyError;
use crate::app::App;
use crate::domain::client::Client;
use crate::domain::identity::Identity;
use crate::federation::round_trip::{Purpose, Upstream};
use crate::federation::session::{SessionError, SessionLimits, SignInSession};
use crate::oauth::authorize::Outcome;
use crate::oauth::error::OAuthError;

/// What a completed sign-in leads to.
#[derive(Debug)]
pub enum Finished {
    /// The pending authorization continues (the next page, or the redirect to the app).
    Authorization { outcome: Outcome, client: Arc<Client> },
    /// An NHS App journey opens its app at this URL.
    Journey(String),
}

/// Why a completed sign-in could not go on.
#[derive(Debug, thiserror::Error)]
pub enum FinishError {
    #[error("the sign-in is no longer expected")]
    Expired,
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Authorization(#[from] OAuthError),
    #[error(transparent)]
    Journey(#[from] JourneyError),
}

impl App {
    /// After the provider vouched for `identity`: signs the browser in (within the provider's
    /// session limits), indexes the session for provider logout, then continues what the sign-in
    /// was for.
    pub async fn finish_sign_in(
        &self,
        session: &SignInSession,
        upstream: Upstream,
        identity: Identity,
    ) -> Result<Finished, FinishError> {
        let provider = self.federation.get(&upstream.idp).ok_or(FinishError::Expired)?;
        let (idle_secs, absolute_secs) = provider.config().session_limits();
        let session_id = session.sign_in(self, identity.clone(), SessionLimits { idle_secs, absolute_secs }).await?;
        self.remember_upstream_session(&upstream.idp, &identity, &session_id).await;
        match upstream.purpose {
            Purpose::Authorize { pending_id } => {
                let (mut pending, client) = crate::oauth::authorize::load_pending(self, &pending_id)
                    .await
                    .ok()
                    .flatten()
                    .ok_or(FinishError::Expired)?;
                // someone who may act for others chooses whom this sign-in is for
                if pending.needs_patient {
                    pending.acting_for = self.may_act_for(&identity).await;
                }
                let outcome = crate::oauth::authorize::signed_in(self, pending, &client, identity, session_id).await?;
                Ok(Finished::Authorization { outcome, client })
            }
            Purpose::NhsApp { journey } => Ok(Finished::Journey(self.open_journey(&journey, identity).await?)),
        }
    }
}

/// The client id carebroker's own pages act under, in the audit and the policy.
pub const PAGES_CLIENT: &str = "carebroker-pages";

impl App {
    /// The signed-in `user` as a FHIR caller on one of carebroker's own pages: `scope`, the
    /// patient in context, and the roles the policy maps their sign-in to, exactly as a token
    /// would carry them, so the page goes through the same guard, policy and audit as any app.
    pub fn page_caller(
        &self,
        user: &crate::federation::session::SessionUser,
        scope: &str,
        patient: Option<&str>,
    ) -> crate::fhir::guard::Caller {
        let now = self.clock.now();
        let policy = self.policy.load_full();
        let holder = crate::oauth::scope_policy::user_holder(&**policy, &user.identity, PAGES_CLIENT);
        let claims = crate::token::access::AccessTokenClaims {
            iss: self.issuer().to_owned(),
            sub: user.identity.platform_subject(),
            aud: self.fhir_base().to_owned(),
            exp: now + 60,
            iat: now,
            jti: crate::token::random_token(12),
            client_id: PAGES_CLIENT.into(),
            scope: scope.into(),
            grant_id: Some(user.session_id.clone()),
            fhir_user: user.identity.fhir_user.clone(),
            patient: patient.map(str::to_owned),
            roles: holder.roles,
            org: holder.org,
            assurance: Some(holder.assurance),
            ..Default::default()
        };
        crate::fhir::guard::Caller::on_page(claims, None, now)
    }
}
