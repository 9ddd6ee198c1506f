//! Request and response tag bytes, and the wire limits of the C epmd.
//!
//! The names follow `erts/epmd/src/epmd.h`; the limits follow `epmd_int.h`.

/// `ALIVE2_REQ` (`'x'`): a node registers its name and distribution port.
pub const ALIVE2_REQ: u8 = 120;
/// `ALIVE2_RESP` (`'y'`): registration reply with a 16-bit creation (HighestVersion < 6).
pub const ALIVE2_RESP: u8 = 121;
/// `ALIVE2_X_RESP` (`'v'`): registration reply with a 32-bit creation (HighestVersion ≥ 6).
pub const ALIVE2_X_RESP: u8 = 118;
/// `PORT_PLEASE2_REQ` (`'z'`): look up a node by name.
pub const PORT_PLEASE2_REQ: u8 = 122;
/// `PORT2_RESP` (`'w'`): reply to `PORT_PLEASE2_REQ`.
pub const PORT2_RESP: u8 = 119;
/// `NAMES_REQ` (`'n'`): list the registered nodes.
pub const NAMES_REQ: u8 = 110;
/// `DUMP_REQ` (`'d'`): list registered and old nodes (debug aid).
pub const DUMP_REQ: u8 = 100;
/// `KILL_REQ` (`'k'`): ask the daemon to exit.
pub const KILL_REQ: u8 = 107;
/// `STOP_REQ` (`'s'`): unregister a node by name (relaxed command check only).
pub const STOP_REQ: u8 = 115;

/// `INBUF_SIZE` of the C epmd: `3 * MAXSYMLEN`. A request needs `Length + 2 < INBUF_SIZE`.
pub const INBUF_SIZE: usize = 3 * MAX_NAME_BYTES;
/// The largest payload (request without its 2-byte length) the C epmd accepts: 3057.
pub const MAX_PAYLOAD: usize = INBUF_SIZE - 3;
/// Bytes one read asks for while the length prefix is still unknown (`INBUF_SIZE - 1`).
pub const FIRST_READ_BYTES: usize = INBUF_SIZE - 1;
/// `MAXSYMLEN`: the most bytes a node name may have (255 code points of up to 4 bytes).
pub const MAX_NAME_BYTES: usize = 255 * 4;
/// The most code points a registered node name may have.
pub const MAX_NAME_CHARS: usize = 255;
/// The most bytes of `Extra` an ALIVE2_REQ may carry.
pub const MAX_EXTRA_BYTES: usize = 1020;
/// The creation sent in every refused ALIVE2 reply.
pub const ERROR_CREATION: u32 = 99;
/// HighestVersion from which ALIVE2 is answered with `ALIVE2_X_RESP` and a 32-bit creation.
pub const EXTENDED_VERSION: u16 = 6;
/// The default epmd port.
pub const DEFAULT_PORT: u16 = 4369;
