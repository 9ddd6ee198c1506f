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

/// A hasher for [`Token`] keys: tokens are unique integers, so one multiplication spreads
/// them well enough, and it is much cheaper than SipHash on every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokenHasher(u64);

impl std::hash::Hasher for TokenHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn write_usize(&mut self, n: usize) {
        // Fibonacci hashing: the high bits, which hashbrown uses, depend on every bit of n.
        self.0 = (n as u64 ^ self.0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The most `--metrics-listen` listeners.
pub const MAX_METRICS_LISTENERS: usize = 16;

/// The token of `--metrics-listen` listener `index`.
pub fn metrics_listener(index: usize) -> Token {
    debug_assert!(index < MAX_METRICS_LISTENERS);
    Token(SIGNALS.0 + 1 + index)
}

/// The metrics listener index of a token, if it is one.
pub fn metrics_listener_index(token: Token) -> Option<usize> {
    let first = SIGNALS.0 + 1;
    (token.0 >= first && token.0 < first + MAX_METRICS_LISTENERS).then(|| token.0 - first)
}

// The metrics listener tokens are below the connection tokens.
const _: () = assert!(SIGNALS.0 + MAX_METRICS_LISTENERS < FIRST_CONN_TOKEN);

// The admin listener token is reserved next to the TCP listeners.
const _: () = assert!(ADMIN.0 < FIRST_CONN_TOKEN);

/// A map keyed by tokens.
pub type TokenMap<V> =
    std::collections::HashMap<Token, V, std::hash::BuildHasherDefault<TokenHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, BuildHasherDefault};

    #[test]
    fn token_hashes_differ_in_their_high_bits() {
        let b = BuildHasherDefault::<TokenHasher>::default();
        let h1 = b.hash_one(Token(64));
        let h2 = b.hash_one(Token(65));
        assert_ne!(h1 >> 57, h2 >> 57);
        let mut m: TokenMap<u32> = TokenMap::default();
        for i in 0..1000 {
            m.insert(Token(i), i as u32);
        }
        assert_eq!(m[&Token(777)], 777);
    }
}
