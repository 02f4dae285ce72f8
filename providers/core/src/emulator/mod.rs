//! Plumbing for keyfed's emulators of outside systems (Keycloak, AWS STS, …): an HTTP/1.1
//! server over plain TCP or TLS, a test certificate authority, and fault injection and request
//! counters that tests drive directly. Each provider crate builds its own routes on top.

mod control;
mod server;
mod tls;

pub use control::{Control, Fault, Latch};
pub use server::{RunningServer, serve};
pub use tls::TestCa;
