//! The operator plane: the admin socket's clients inside the daemon loop. It accepts them,
//! reads their one-line requests, streams `watch` events and writes replies; the loop
//! renders the views it is asked for ([`crate::server::admin_views`]) and acts on
//! upgrades.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use log::{debug, warn};
use mio::{Interest, Token};

use crate::admin::NodeEvent;
use crate::admin::{View, WatchEvent};
use crate::server::admin::{
    may_upgrade, AdminConn, AdminListener, AdminRead, MAX_ADMIN_CONNECTIONS,
};
use crate::server::events::HISTORY_LEN;
use crate::server::token::{ConnTokens, TokenMap};

/// What an admin client asked that the loop must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminRequest {
    /// `history [NAME]`: the remembered node events ([`OperatorPlane::history`]), to send
    /// with [`OperatorPlane::reply`].
    History(Token, Option<String>),
    /// A view to render and send with [`OperatorPlane::reply`].
    View(Token, View),
    /// `upgrade`, from a client allowed to ask: hand the daemon over and tell it the
    /// outcome ([`OperatorPlane::answer`]).
    Upgrade(Token),
}

/// The operator plane's state: the admin socket and its clients.
#[derive(Debug, Default)]
pub struct OperatorPlane {
    listener: Option<AdminListener>,
    conns: TokenMap<AdminConn>,
    /// The last [`HISTORY_LEN`] node events, oldest first.
    history: VecDeque<NodeEvent>,
}

impl OperatorPlane {
    /// The plane serving `listener`, if there is an admin socket.
    pub fn new(listener: Option<AdminListener>) -> Self {
        OperatorPlane {
            listener,
            conns: TokenMap::default(),
            history: VecDeque::with_capacity(64),
        }
    }

    /// Whether `token` is an admin client.
    pub fn has(&self, token: Token) -> bool {
        self.conns.contains_key(&token)
    }

    /// Open admin clients.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether no admin client is open.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// The admin socket's fd and path, for a snapshot.
    pub fn socket(&self) -> Option<(RawFd, &Path)> {
        self.listener
            .as_ref()
            .map(|a| (a.listener.as_raw_fd(), a.path.as_path()))
    }

    /// Accepts every waiting admin client; returns how many were refused because
    /// [`MAX_ADMIN_CONNECTIONS`] were open.
    pub fn accept(&mut self, poll: &mio::Registry, tokens: &mut ConnTokens) -> u64 {
        let mut capped = 0;
        loop {
            let accepted = match &self.listener {
                Some(a) => a.listener.accept(),
                None => return capped,
            };
            match accepted {
                Ok((stream, _)) if self.conns.len() >= MAX_ADMIN_CONNECTIONS => {
                    // Dropping the stream closes it: the client sees EOF.
                    capped += 1;
                    debug!("refusing an admin client: {} open", self.conns.len());
                    drop(stream);
                }
                Ok((mut stream, _)) => {
                    let token = tokens.allocate();
                    if poll
                        .register(&mut stream, token, Interest::READABLE)
                        .is_ok()
                    {
                        self.conns.insert(token, AdminConn::new(stream));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return capped,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("error in admin accept: {e}");
                    return capped;
                }
            }
        }
    }

    /// Handles readiness of the admin client `token`: answers what needs nothing from
    /// the loop (`watch`, a refused upgrade, an unknown view) and returns the rest.
    pub fn ready(&mut self, poll: &mio::Registry, token: Token) -> Option<AdminRequest> {
        let conn = self.conns.get_mut(&token)?;
        match conn.read_line() {
            AdminRead::Pending => {}
            AdminRead::Close => {
                self.close(poll, token);
                return None;
            }
            AdminRead::Line(line) => {
                let (word, arg) = match line.split_once(' ') {
                    Some((w, a)) => (w.to_owned(), Some(a.trim().to_owned())),
                    None => (line.clone(), None),
                };
                if View::parse(&word) == Some(View::History) {
                    return Some(AdminRequest::History(token, arg.filter(|a| !a.is_empty())));
                }
                let reply = if View::parse(&word) == Some(View::Upgrade) {
                    let uid = conn.peer_uid;
                    match upgrade_refusal(uid, arg.as_deref()) {
                        None => return Some(AdminRequest::Upgrade(token)),
                        Some(why) => {
                            let who = uid.map_or_else(|| "unknown".to_owned(), |u| u.to_string());
                            warn!("refusing admin upgrade from uid {who}: {why}");
                            serde_json::json!({ "ok": false, "error": why }).to_string()
                        }
                    }
                } else {
                    match View::parse(&line) {
                        Some(View::Watch) => {
                            conn.watching = true;
                            conn.deadline = None;
                            self.flush(poll, token);
                            return None;
                        }
                        Some(view) => return Some(AdminRequest::View(token, view)),
                        None => serde_json::json!({ "error": format!("unknown view {line:?}") })
                            .to_string(),
                    }
                };
                conn.queue(reply.as_bytes());
                conn.queue(b"\n");
                conn.close_after_flush = true;
            }
        }
        self.flush(poll, token);
        None
    }

    /// Sends `text` (one JSON document) to the admin client `token` and closes it.
    pub fn reply(&mut self, poll: &mio::Registry, token: Token, text: &str) {
        if let Some(c) = self.conns.get_mut(&token) {
            c.queue(text.as_bytes());
            c.queue(b"\n");
            c.close_after_flush = true;
        }
        self.flush(poll, token);
    }

    fn flush(&mut self, poll: &mio::Registry, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        match conn.flush() {
            Ok(true) if conn.close_after_flush => self.close(poll, token),
            Ok(done) => {
                let wanted = if done {
                    Interest::READABLE
                } else {
                    Interest::READABLE | Interest::WRITABLE
                };
                let _ = poll.reregister(&mut conn.stream, token, wanted);
            }
            Err(_) => self.close(poll, token),
        }
    }

    /// The earliest admin client deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns.values().filter_map(|c| c.deadline).min()
    }

    /// Closes the admin clients whose deadline has passed; returns how many.
    pub fn expire(&mut self, poll: &mio::Registry, now: Instant) -> u64 {
        let expired: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(t, _)| *t)
            .collect();
        for t in &expired {
            debug!("closing an admin client at its deadline");
            self.close(poll, *t);
        }
        expired.len() as u64
    }

    fn close(&mut self, poll: &mio::Registry, token: Token) {
        if let Some(mut conn) = self.conns.remove(&token) {
            let _ = poll.deregister(&mut conn.stream);
        }
    }

    /// Keeps `event` for `admin history` (the oldest goes beyond [`HISTORY_LEN`]).
    pub fn record(&mut self, event: NodeEvent) {
        if self.history.len() >= HISTORY_LEN {
            self.history.pop_front();
        }
        self.history.push_back(event);
    }

    /// The remembered events, oldest first, of `name` only when given.
    pub fn history(&self, name: Option<&str>) -> Vec<&NodeEvent> {
        self.history
            .iter()
            .filter(|e| name.is_none_or(|n| e.node == n))
            .collect()
    }

    /// Whether some client is watching events.
    pub fn has_watchers(&self) -> bool {
        self.conns.values().any(|c| c.watching)
    }

    /// Sends `event` to every `watch` client; one that does not read is dropped.
    pub fn broadcast(&mut self, poll: &mio::Registry, event: &WatchEvent) {
        let watchers: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| c.watching)
            .map(|(t, _)| *t)
            .collect();
        if watchers.is_empty() {
            return;
        }
        let mut line = serde_json::to_vec(event).unwrap_or_default();
        line.push(b'\n');
        for t in watchers {
            let queued = self.conns.get_mut(&t).is_some_and(|c| c.queue(&line));
            if queued {
                self.flush(poll, t);
            } else {
                warn!("dropping an admin watcher that does not read");
                self.close(poll, t);
            }
        }
    }

    /// Whether the admin socket file stays when the plane is dropped: true in a
    /// hand-over successor until the hand-over is confirmed, false once it is (the file
    /// is then this process's to remove).
    pub fn keep_socket_file(&mut self, keep: bool) {
        if let Some(a) = self.listener.as_mut() {
            a.unlink_on_drop = !keep;
        }
    }

    /// Leaves the admin socket file in place when this process exits (its successor owns
    /// it now).
    pub fn disown_socket(&mut self) {
        if let Some(a) = self.listener.as_mut() {
            a.path = PathBuf::new();
        }
    }
}

/// Why an `upgrade` request from a peer with `uid`, with the argument `arg`, is refused;
/// `None` when it is served. The request may not name a program (a hand-over always starts
/// the daemon's own binary), and only root and the daemon's own user may ask.
fn upgrade_refusal(uid: Option<u32>, arg: Option<&str>) -> Option<String> {
    if arg.is_some_and(|a| !a.is_empty()) {
        return Some(
            "upgrade takes no argument: the daemon always starts its own binary".to_owned(),
        );
    }
    if !may_upgrade(uid) {
        return Some("upgrade is served only to root and the daemon's own user".to_owned());
    }
    None
}
