//! The authorization server, without HTTP types, as behaviour of [`crate::app::App`]: client authentication, the token endpoint
//! pipeline and its grants, introspection, revocation, dynamic registration and discovery. Each
//! function takes plain inputs and returns a typed result or an [`error::OAuthError`].

pub mod authorize;
pub mod client_auth;
pub mod client_keys;
pub mod clients;
pub mod discovery;
pub mod dpop;
pub mod error;
pub mod grants;
pub mod introspect;
pub mod issue;
pub mod oidc;
pub mod par;
pub mod params;
pub mod rate;

pub mod register;
pub mod revoke;
pub mod scope_policy;
pub mod token_endpoint;
