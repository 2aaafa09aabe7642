//! `/userinfo` and RP-initiated logout (`/logout`).

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower_sessions::Session;

use super::AppState;
use super::error::ErrorResponse;
use super::extract::PostedForm;
use super::page::{PageError, policy, redirect};
use super::pages;
use crate::app::App;
use crate::domain::identity::Identity;
use crate::federation::session::SignInSession;
use crate::oauth::oidc;

pub async fn userinfo(State(app): State<AppState>, method: axum::http::Method, headers: HeaderMap) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let dpop = super::forms::Dpop::of(&headers);
    let url = app.config.endpoint("/userinfo");
    match oidc::userinfo(&app, authorization, dpop.header(), method.as_str(), &url).await {
        Ok(claims) => Json(claims).into_response(),
        Err(e) => ErrorResponse(e).into_response(),
    }
}

/// `GET /logout?id_token_hint=&post_logout_redirect_uri=&state=`: with a valid hint the user is
/// signed out at once; without one they are asked first (a logout link alone is not trusted).
pub async fn logout_get(
    State(app): State<AppState>,
    session: Session,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let session = SignInSession::new(session);
    let pairs: Vec<(String, String)> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let Some(hint) = get("id_token_hint").and_then(|h| oidc::verify_id_token_hint(&app, h)) else {
        let signed_in = session.user(&app).await?.map(|u| u.identity);
        let mut page_policy = policy(&app, None);
        page_policy.form_targets = app.logout_form_targets(signed_in.as_ref()).await;
        return Ok(pages::confirm_sign_out(&session.csrf_token().await?, &page_policy));
    };
    let ended = session.sign_out(&app).await?;
    let Some(uri) = get("post_logout_redirect_uri") else { return Ok(signed_out(&app, ended.as_ref(), None).await) };
    match oidc::post_logout_target(&app, &hint.aud, uri).await {
        Ok(true) => {
            let mut target = url::Url::parse(uri).map(|u| u.to_string()).unwrap_or_default();
            if let (Ok(mut url), Some(state_value)) = (url::Url::parse(uri), get("state")) {
                url.query_pairs_mut().append_pair("state", state_value);
                target = url.to_string();
            }
            Ok(signed_out(&app, ended.as_ref(), Some(target)).await)
        }
        Ok(false) => Ok(pages::error_page(
            StatusCode::BAD_REQUEST,
            "You have signed out",
            "The app asked to be sent to an address it has not registered, so you stay here.",
            &policy(&app, None),
        )),
        Err(e) => Ok(ErrorResponse(e).into_response()),
    }
}

/// After signing out here: single logout at the user's SAML provider when it has one, else the
/// app's post-logout redirect `then`, else our signed-out page.
async fn signed_out(app: &App, ended: Option<&Identity>, then: Option<String>) -> Response {
    if let Some(ended) = ended {
        if let Some(url) = app.saml_single_logout(ended, then.clone()).await {
            return redirect(&url, StatusCode::SEE_OTHER);
        }
    }
    match then {
        Some(target) => redirect(&target, StatusCode::FOUND),
        None => pages::signed_out(&policy(app, None)),
    }
}

/// `POST /logout`: the confirmation form.
pub async fn logout_post(State(app): State<AppState>, form: PostedForm) -> Result<Response, PageError> {
    let ended = form.session.sign_out(&app).await?;
    Ok(signed_out(&app, ended.as_ref(), None).await)
}
