//! The sans-IO EPMD codec: bytes in, typed values out, and back. No sockets, no clock, no
//! logging.
//!
//! | tag | name | direction | layout (after the 2-byte length of requests) |
//! |---|---|---|---|
//! | 120 `x` | ALIVE2_REQ | client → epmd | `x, Port:u16, Type:u8, Proto:u8, High:u16, Low:u16, Nlen:u16, Name, Elen:u16, Extra` |
//! | 118 `v` | ALIVE2_X_RESP | epmd → client | `v, Result:u8, Creation:u32` (High ≥ 6) |
//! | 121 `y` | ALIVE2_RESP | epmd → client | `y, Result:u8, Creation:u16` (High < 6) |
//! | 122 `z` | PORT_PLEASE2_REQ | client → epmd | `z, Name` |
//! | 119 `w` | PORT2_RESP | epmd → client | `w, 0, Port, Type, Proto, High, Low, Nlen, Name, Elen, Extra` or `w, 1` |
//! | 110 `n` | NAMES_REQ | client → epmd | `n` → `Port:u32` + `name N at port P\n`… |
//! | 100 `d` | DUMP_REQ | client → epmd | `d` → `Port:u32` + `active name     <N> at port P, fd = F\n\0`… |
//! | 107 `k` | KILL_REQ | client → epmd | `k` → `OK` or `NO` |
//! | 115 `s` | STOP_REQ | client → epmd | `s, Name` → `STOPPED` or `NOEXISTSTOPPED` |
//!
//! Replies have no length prefix; the connection closes after each one, except after an
//! ALIVE2 reply.

pub mod error;
pub mod frame;
pub mod node;
pub mod reader;
pub mod request;
pub mod response;
pub mod tag;
pub mod text;

pub use error::{FrameError, NameError, RequestError};
pub use frame::{decode_frame, encode_frame, read_limit, Status};
pub use node::{NodeInfo, NodeName, NodeType};
pub use request::{Alive2Request, Request};
pub use response::{Alive2Reply, Port2Reply};

#[cfg(test)]
mod tests;
