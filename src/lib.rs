//! carebroker: an authentication broker for shared care records. It federates the identities
//! health and care staff and patients already have into short-lived SMART App Launch tokens that
//! carry patient launch context, and fronts a thin FHIR care-plan API that enforces them.
//!
//! Dependency direction: `main -> http -> launch -> federation -> oauth, fhir -> token, policy,
//! pds, audit, store -> domain, config`; every protocol module adds its behaviour to
//! [`app::App`]. `docs/architecture.md` has the module map.

/// mimalloc instead of glibc's allocator, for every binary built on this crate (the server, the
/// CLI, the benchmarks' stacks, the tests): the allocator was 12–16 % of the server's CPU on every
/// profiled flow (README, "Benchmarks"). Not under `cargo fuzz`, whose sanitizer must see every
/// allocation.
#[cfg(not(fuzzing))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod app;
pub mod audit;
pub mod clock;
pub mod config;
pub mod domain;
pub mod federation;
pub mod fhir;
pub mod fuzz_bodies;
pub mod http;
pub mod keyspaces;
pub mod launch;
pub mod oauth;
pub mod outbound;
pub mod pds;
pub mod policy;
pub mod store;
pub mod telemetry;
pub mod token;
pub mod vrs;

pub use app::App;
pub use http::{AppState, app};
