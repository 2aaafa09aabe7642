//! The one integration-test binary: a module per area.

mod authorize;
mod backend_services;
mod browser;
mod cli;
mod client_auth;
mod discovery;
mod ehr_launch;
mod introspection;
mod registration;
mod remote_jwks;
mod scale_out;
mod stores;
mod support;
mod user_grants;
