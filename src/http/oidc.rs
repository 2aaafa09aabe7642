//! `/userinfo` and RP-initiated logout (`/logout`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower_sessions::Session;

use super::AppState;
use super::error::ErrorResponse;
use super::interaction::{FormFields, check_form, csrf_token, current_user, policy};
use super::pages;
use crate::domain::identity::Identity;
use crate::oauth::oidc;

pub async fn userinfo(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match oidc::userinfo(&state, authorization).await {
        Ok(claims) => Json(claims).into_response(),
        Err(e) => ErrorResponse(e).into_response(),
    }
}

/// `GET /logout?id_token_hint=&post_logout_redirect_uri=&state=`: with a valid hint the user is
/// signed out at once; without one they are asked first (a logout link alone is not trusted).
pub async fn logout_get(State(state): State<AppState>, session: Session, RawQuery(query): RawQuery) -> Response {
    let app = &state;
    let pairs: Vec<(String, String)> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let hint = get("id_token_hint").and_then(|h| oidc::verify_id_token_hint(app, h));
    let Some(hint) = hint else {
        let signed_in = match current_user(app, &session).await {
            Ok(user) => user.map(|u| u.identity),
            Err(response) => return response,
        };
        let mut page_policy = policy(app, None);
        page_policy.form_targets = super::saml::logout_form_targets(&state, signed_in.as_ref()).await;
        return match csrf_token(&session).await {
            Ok(csrf) => pages::confirm_sign_out(&csrf, &page_policy),
            Err(response) => response,
        };
    };
    let ended = match sign_out(&state, &session).await {
        Ok(ended) => ended,
        Err(response) => return response,
    };
    match get("post_logout_redirect_uri") {
        Some(uri) => match oidc::post_logout_target(app, &hint.aud, uri).await {
            Ok(true) => {
                let mut target = url::Url::parse(uri).map(|u| u.to_string()).unwrap_or_default();
                if let (Ok(mut url), Some(state_value)) = (url::Url::parse(uri), get("state")) {
                    url.query_pairs_mut().append_pair("state", state_value);
                    target = url.to_string();
                }
                if let Some(upstream) = upstream_logout(&state, ended.as_ref(), Some(target.clone())).await {
                    return upstream;
                }
                let mut response = StatusCode::FOUND.into_response();
                if let Ok(value) = HeaderValue::from_str(&target) {
                    response.headers_mut().insert(header::LOCATION, value);
                }
                response
            }
            Ok(false) => pages::error_page(
                StatusCode::BAD_REQUEST,
                "You have signed out",
                "The app asked to be sent to an address it has not registered, so you stay here.",
                &policy(app, None),
            ),
            Err(e) => ErrorResponse(e).into_response(),
        },
        None => match upstream_logout(&state, ended.as_ref(), None).await {
            Some(upstream) => upstream,
            None => pages::signed_out(&policy(app, None)),
        },
    }
}

/// Single logout at the user's SAML provider, when it has one: the redirect there.
async fn upstream_logout(state: &AppState, ended: Option<&Identity>, then: Option<String>) -> Option<Response> {
    super::saml::single_logout(state, ended?, then).await
}

/// `POST /logout`: the confirmation form.
pub async fn logout_post(State(state): State<AppState>, session: Session, headers: HeaderMap, body: Bytes) -> Response {
    let Some(form) = FormFields::parse(&headers, &body) else {
        return pages::error_page(
            StatusCode::BAD_REQUEST,
            "This form cannot be accepted",
            "The form was not sent as a form.",
            &policy(&state, None),
        );
    };
    if let Err(response) = check_form(&state, &session, &headers, &form).await {
        return response;
    }
    match sign_out(&state, &session).await {
        Ok(ended) => match upstream_logout(&state, ended.as_ref(), None).await {
            Some(upstream) => upstream,
            None => pages::signed_out(&policy(&state, None)),
        },
        Err(response) => response,
    }
}

/// Ends this browser's sign-in session; returns whose it was.
async fn sign_out(state: &AppState, session: &Session) -> Result<Option<Identity>, Response> {
    let user = current_user(&state, session).await?;
    if let Some(user) = &user {
        if let Err(e) = oidc::end_session(&state, &user.session_id).await {
            return Err(ErrorResponse(e).into_response());
        }
    }
    session.flush().await.map_err(|e| {
        tracing::error!(error = %e, "session store failure");
        StatusCode::SERVICE_UNAVAILABLE.into_response()
    })?;
    Ok(user.map(|u| u.identity))
}
