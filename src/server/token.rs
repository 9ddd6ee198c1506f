//! mio tokens: a reserved range for listening sockets and other fixed sources, and
//! connection tokens above it that are never reused (so a stale event cannot reach a new
//! connection).

use mio::Token;

/// The most listening sockets the daemon serves (the C epmd's `MAX_LISTEN_SOCKETS`).
pub const MAX_LISTENERS: usize = 16;

/// The admin Unix socket's listener.
pub const ADMIN: Token = Token(MAX_LISTENERS);

/// The signal source (SIGTERM, SIGINT, SIGHUP).
pub const SIGNALS: Token = Token(MAX_LISTENERS + 1);

/// Tokens below this value are reserved for listeners and fixed event sources.
pub const FIRST_CONN_TOKEN: usize = 64;

/// The token of listening socket number `index`.
pub fn listener(index: usize) -> Token {
    debug_assert!(index < MAX_LISTENERS);
    Token(index)
}

/// The listener index of `token`, if it is a listener token.
pub fn listener_index(token: Token) -> Option<usize> {
    (token.0 < MAX_LISTENERS).then_some(token.0)
}

/// Hands out connection tokens in increasing order.
#[derive(Debug)]
pub struct ConnTokens {
    next: usize,
}

impl ConnTokens {
    /// Starts at [`FIRST_CONN_TOKEN`].
    pub fn new() -> ConnTokens {
        ConnTokens {
            next: FIRST_CONN_TOKEN,
        }
    }

    /// A token never handed out before.
    pub fn allocate(&mut self) -> Token {
        let t = Token(self.next);
        self.next += 1;
        t
    }
}

impl Default for ConnTokens {
    fn default() -> Self {
        ConnTokens::new()
    }
}
