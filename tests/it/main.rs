//! The one integration-test binary: a module per area.

mod backend_services;
mod cli;
mod client_auth;
mod discovery;
mod introspection;
mod registration;
mod remote_jwks;
mod scale_out;
mod stores;
mod support;
