//! The wireless path read as an attacker on the network reads it: each
//! test mounts one attack from the outside, over real TCP against a real
//! relay and server, and asserts what the attacker gets (nothing) and
//! what the genuine device and user keep (everything).
//!
//! - [`relay`]: devices authenticated at the relay; strangers cannot take
//!   another device's place, its stored packets or its home server.
//! - [`activation`]: forged or foreign activation traffic neither aborts
//!   a genuine activation nor burns the user's activation password.
//! - [`replay`]: a recorded packet played again is not acted on twice,
//!   on the server or on the device, across restarts.

mod activation;
mod relay;
mod replay;
