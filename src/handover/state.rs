//! The versioned daemon state passed to a successor: listening sockets, connections (each
//! named, its fd passed alongside), registrations, old names and counters. JSON via serde.
//!
//! The same document is used for a live hand-over (fds passed with SCM_RIGHTS in the order
//! of [`State::fd_names`]) and for systemd's file-descriptor store (fds stored under those
//! names, the document in a memfd).
//!
//! Versioning: `format` must be [`FORMAT`] and `version` must be one this build reads
//! ([`MIN_VERSION`]..=[`VERSION`]). A newer or unknown version is refused before anything
//! is taken over, so the old process keeps serving.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The `format` field of every state document.
pub const FORMAT: &str = "epmd-rs-state";
/// The version this build writes.
pub const VERSION: u32 = 1;
/// The oldest version this build reads.
pub const MIN_VERSION: u32 = 1;

/// The largest counter a document may carry (2^62): counters keep growing after a
/// restore, and from here no sum this process can make overflows a `u64`.
pub const MAX_COUNTER: u64 = 1 << 62;

/// The longest `extra` a registration may carry: the protocol's limit (an ALIVE2 with a
/// longer one is refused), far below what would truncate PORT2's 16-bit `Elen`.
pub const MAX_EXTRA_BYTES: usize = crate::protocol::tag::MAX_EXTRA_BYTES;

const _: () = assert!(MAX_EXTRA_BYTES <= u16::MAX as usize);

/// The whole state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Always [`FORMAT`].
    pub format: String,
    /// The state format version.
    pub version: u32,
    /// The pid of the process that wrote it.
    pub writer_pid: u32,
    /// Listening sockets, by fd name.
    pub listeners: Vec<String>,
    /// The admin socket's fd name and path, if there is one.
    pub admin: Option<AdminState>,
    /// The fd name of the state document systemd's fd store holds now (`state-<n>`),
    /// passed along with its memfd: the successor stores its own under a higher number,
    /// then removes this one.
    #[serde(default)]
    pub fd_store: Option<String>,
    /// Open epmd connections.
    pub connections: Vec<ConnState>,
    /// Live registrations, oldest first.
    pub registrations: Vec<RegState>,
    /// Old/unused names, oldest first.
    pub old: Vec<OldState>,
    /// Counters.
    pub stats: StatsState,
    /// Seconds the daemon has been up (uptime continues across hand-overs).
    pub uptime_secs: u64,
    /// `--metrics-listen` sockets, by fd name; their fds come last, after the
    /// connections' (a state without them is one written before they existed).
    #[serde(default)]
    pub metrics_listeners: Vec<String>,
}

/// The admin listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminState {
    /// Its fd name.
    pub fd: String,
    /// Its path.
    pub path: String,
}

/// One epmd connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnState {
    /// Its fd name (unique in the document).
    pub fd: String,
    /// What it is doing.
    pub phase: PhaseState,
    /// Bytes of a partially received request (hex).
    pub rx_hex: String,
    /// Reply bytes not yet written (hex).
    pub tx_hex: String,
    /// Milliseconds left before its request deadline (none for registration connections).
    pub deadline_ms: Option<u64>,
    /// Bytes read so far.
    pub bytes_in: u64,
    /// Bytes written so far.
    pub bytes_out: u64,
}

/// A connection's phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseState {
    /// Collecting its request.
    Reading,
    /// Writing a reply, then closing.
    WritingThenClose,
    /// Writing an ALIVE2 reply, then a registration connection.
    WritingThenRegister,
    /// Writing a KILL reply, then exiting.
    WritingThenExit,
    /// A registration connection.
    Registered,
}

/// One live registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegState {
    /// The fd name of the connection that owns it.
    pub conn: String,
    /// Node name.
    pub name: String,
    /// Distribution port.
    pub port: u16,
    /// Node type byte.
    pub node_type: u8,
    /// Protocol byte.
    pub protocol: u8,
    /// HighestVersion.
    pub highest_version: u16,
    /// LowestVersion.
    pub lowest_version: u16,
    /// Extra bytes (hex).
    pub extra_hex: String,
    /// The slot's 32-bit creation counter.
    pub creation: u32,
    /// Unix time of the registration.
    pub registered_at: u64,
    /// DUMP's `fd = F`.
    pub fd_label: u32,
}

/// One old/unused name slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OldState {
    /// Name.
    pub name: String,
    /// Last port.
    pub port: u16,
    /// Last `fd = F`.
    pub fd_label: u32,
    /// Creation counter.
    pub creation: u32,
}

/// Counters carried over.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsState {
    /// Requests by kind.
    pub requests: BTreeMap<String, u64>,
    /// Other counters by name.
    pub counters: BTreeMap<String, u64>,
    /// How many hand-overs this state has gone through.
    pub handovers: u64,
}

/// Why a state document was refused.
#[derive(Debug)]
pub enum StateError {
    /// Not JSON of the expected shape.
    Malformed(serde_json::Error),
    /// Not an epmd-rs state document.
    WrongFormat,
    /// A version this build does not read.
    UnsupportedVersion(u32),
    /// The document names an fd that was not passed, twice, or a registration names an
    /// unknown connection.
    MissingFd(String),
    /// Hex fields or names that do not decode, or a field beyond its bound.
    BadField(&'static str),
    /// The registrations are inconsistent.
    Registry(crate::registry::RestoreError),
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::Malformed(e) => write!(f, "malformed state: {e}"),
            StateError::WrongFormat => f.write_str("not an epmd-rs state document"),
            StateError::UnsupportedVersion(v) => write!(
                f,
                "state version {v} is not supported (this build reads {MIN_VERSION}..={VERSION})"
            ),
            StateError::MissingFd(n) => write!(f, "state names fd {n:?} that was not passed"),
            StateError::BadField(what) => write!(f, "invalid {what} in state"),
            StateError::Registry(e) => write!(f, "inconsistent registrations: {e}"),
        }
    }
}

impl std::error::Error for StateError {}

impl State {
    /// Parses and version-checks a document.
    pub fn decode(bytes: &[u8]) -> Result<State, StateError> {
        // Check the envelope first, so that a future version with another shape is refused
        // as a version, not as malformed.
        #[derive(Deserialize)]
        struct Envelope {
            format: String,
            version: u32,
        }
        let env: Envelope = serde_json::from_slice(bytes).map_err(StateError::Malformed)?;
        if env.format != FORMAT {
            return Err(StateError::WrongFormat);
        }
        if !(MIN_VERSION..=VERSION).contains(&env.version) {
            return Err(StateError::UnsupportedVersion(env.version));
        }
        let state: State = serde_json::from_slice(bytes).map_err(StateError::Malformed)?;
        state.check_bounds()?;
        Ok(state)
    }

    /// Refuses fields beyond their bounds: an `extra` longer than [`MAX_EXTRA_BYTES`] (its
    /// PORT2 length field would be truncated), a counter above [`MAX_COUNTER`] (it could
    /// overflow once added to).
    fn check_bounds(&self) -> Result<(), StateError> {
        for r in &self.registrations {
            if r.extra_hex.len() > 2 * MAX_EXTRA_BYTES {
                return Err(StateError::BadField("extra"));
            }
        }
        let counters = self
            .stats
            .requests
            .values()
            .chain(self.stats.counters.values())
            .chain([&self.stats.handovers, &self.uptime_secs])
            .chain(
                self.connections
                    .iter()
                    .flat_map(|c| [&c.bytes_in, &c.bytes_out]),
            );
        for v in counters {
            if *v > MAX_COUNTER {
                return Err(StateError::BadField("counter"));
            }
        }
        Ok(())
    }

    /// Serialises the document.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Every fd name the document refers to, in a stable order: listeners, admin,
    /// connections. A hand-over passes the fds in this order.
    pub fn fd_names(&self) -> Vec<String> {
        let mut names = self.listeners.clone();
        names.extend(self.admin.iter().map(|a| a.fd.clone()));
        names.extend(self.fd_store.iter().cloned());
        names.extend(self.connections.iter().map(|c| c.fd.clone()));
        names.extend(self.metrics_listeners.iter().cloned());
        names
    }
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes lower- or upper-case hex.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        State {
            format: FORMAT.into(),
            version: VERSION,
            writer_pid: 1,
            listeners: vec!["listen-0".into()],
            admin: None,
            fd_store: None,
            connections: vec![ConnState {
                fd: "conn-70".into(),
                phase: PhaseState::Registered,
                rx_hex: String::new(),
                tx_hex: String::new(),
                deadline_ms: None,
                bytes_in: 21,
                bytes_out: 6,
            }],
            registrations: vec![],
            old: vec![],
            stats: StatsState::default(),
            uptime_secs: 3,
            metrics_listeners: vec!["metrics-0".into()],
        }
    }

    #[test]
    fn round_trip_and_fd_order() {
        let s = sample();
        assert_eq!(State::decode(&s.encode()).unwrap(), s);
        // Metrics listeners come last, so that an older reader's fd order still holds.
        assert_eq!(s.fd_names(), ["listen-0", "conn-70", "metrics-0"]);
    }

    #[test]
    fn versions_are_checked_before_the_shape() {
        let future = br#"{"format":"epmd-rs-state","version":2,"something":"new"}"#;
        assert!(matches!(
            State::decode(future),
            Err(StateError::UnsupportedVersion(2))
        ));
        let other = br#"{"format":"other","version":1}"#;
        assert!(matches!(State::decode(other), Err(StateError::WrongFormat)));
        assert!(matches!(
            State::decode(b"garbage"),
            Err(StateError::Malformed(_))
        ));
    }

    #[test]
    fn a_version_1_document_without_later_optional_fields_still_decodes() {
        // The first version-1 writer had no `fd_store` field; readers default it.
        let mut doc: serde_json::Value = serde_json::from_slice(&sample().encode()).unwrap();
        doc.as_object_mut().unwrap().remove("fd_store");
        let state = State::decode(doc.to_string().as_bytes()).unwrap();
        assert_eq!(state.fd_store, None);
        assert_eq!(state, sample());
    }

    #[test]
    fn an_extra_longer_than_the_protocol_allows_is_refused() {
        let mut s = sample();
        let reg = |extra: usize| RegState {
            conn: "conn-70".into(),
            name: "a".into(),
            port: 1,
            node_type: 77,
            protocol: 0,
            highest_version: 6,
            lowest_version: 5,
            extra_hex: "ab".repeat(extra),
            creation: 1,
            registered_at: 0,
            fd_label: 3,
        };
        s.registrations = vec![reg(MAX_EXTRA_BYTES)];
        assert_eq!(State::decode(&s.encode()).unwrap(), s);
        // 65,535 - 13 + 1 bytes would wrap PORT2's Elen; anything over the limit is refused.
        for len in [MAX_EXTRA_BYTES + 1, 65_523, 70_000] {
            s.registrations = vec![reg(len)];
            assert!(
                matches!(
                    State::decode(&s.encode()),
                    Err(StateError::BadField("extra"))
                ),
                "{len}"
            );
        }
    }

    #[test]
    fn counters_that_could_overflow_are_refused() {
        let ok = sample();
        let mut s = ok.clone();
        s.stats.counters.insert("bytes_in".into(), MAX_COUNTER);
        assert!(State::decode(&s.encode()).is_ok());
        let setters: [fn(&mut State); 5] = [
            |s| {
                s.stats.counters.insert("bytes_in".into(), u64::MAX);
            },
            |s| {
                s.stats.requests.insert("names".into(), MAX_COUNTER + 1);
            },
            |s| s.stats.handovers = u64::MAX,
            |s| s.uptime_secs = u64::MAX,
            |s| s.connections[0].bytes_out = u64::MAX,
        ];
        for set in setters {
            let mut s = ok.clone();
            set(&mut s);
            assert!(matches!(
                State::decode(&s.encode()),
                Err(StateError::BadField("counter"))
            ));
        }
    }

    #[test]
    fn hex() {
        assert_eq!(to_hex(&[0, 0xAB]), "00ab");
        assert_eq!(from_hex("00aB"), Some(vec![0, 0xAB]));
        assert_eq!(from_hex("0"), None);
        assert_eq!(from_hex("zz"), None);
    }
}
